// Names the client and the workflows share: the progress query, the epoch signal, and the
// typed custom search attributes (registered on the server by client/server.ts or compose).
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal } from '@temporalio/workflow';
import { SEARCH_ATTRIBUTE_NAMES, type AuditProgress, type EpochUpdate } from './types.js';

export const progressQuery = defineQuery<AuditProgress>('progress');
/** Sent by a training activity to the workflow that scheduled it, at most once per epoch. */
export const stageEpochSignal = defineSignal<[EpochUpdate]>('stageEpoch');

export const datasetKey = defineSearchAttributeKey(SEARCH_ATTRIBUTE_NAMES.dataset, SearchAttributeType.KEYWORD);
export const stageKey = defineSearchAttributeKey(SEARCH_ATTRIBUTE_NAMES.stage, SearchAttributeType.KEYWORD);
export const targetClassesKey = defineSearchAttributeKey(SEARCH_ATTRIBUTE_NAMES.targetClasses, SearchAttributeType.KEYWORD_LIST);
export const verdictKey = defineSearchAttributeKey(SEARCH_ATTRIBUTE_NAMES.verdict, SearchAttributeType.KEYWORD);

/** Type names for `temporal server start-dev --search-attribute` and the operator API. */
export const SEARCH_ATTRIBUTE_TYPES: Record<string, 'Keyword' | 'KeywordList'> = {
  [SEARCH_ATTRIBUTE_NAMES.dataset]: 'Keyword',
  [SEARCH_ATTRIBUTE_NAMES.stage]: 'Keyword',
  [SEARCH_ATTRIBUTE_NAMES.targetClasses]: 'KeywordList',
  [SEARCH_ATTRIBUTE_NAMES.verdict]: 'Keyword',
};
