// Assertions on the two kinds of bad-input errors: a pipeline file's problems, and a dataset's.
import { expect } from 'chai';
import { parsePipeline, PipelineError } from '../client/pipeline.js';
import { DatasetError } from '../data/formats.js';

/** The problem lines of the PipelineError that parsing `text` (as `file`) must throw. */
export async function pipelineProblems(text: string, file = '/p/x.yaml'): Promise<string[]> {
  try {
    await parsePipeline(text, file);
  } catch (err) {
    expect(err).to.be.instanceOf(PipelineError);
    return (err as PipelineError).message
      .split('\n')
      .slice(1)
      .map((l) => l.trim());
  }
  throw new Error('expected a PipelineError');
}

/** The DatasetError that `run` must reject with. */
export async function datasetError(run: () => Promise<unknown>): Promise<DatasetError> {
  let caught: unknown;
  try {
    await run();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a DatasetError').to.be.instanceOf(DatasetError);
  return caught as DatasetError;
}
