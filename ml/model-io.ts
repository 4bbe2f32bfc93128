// Models on disk in the tfjs layers format (model.json + weights.bin), readable by any tfjs
// (browser, tfjs-node, the converter). Written and read through in-memory IO handlers so it
// works without tfjs-node's file:// handler.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { publishDir } from '../data/files.js';

const MODEL_JSON = 'model.json';
const WEIGHTS_BIN = 'weights.bin';

function toBytes(data: tf.io.WeightData | undefined): Uint8Array {
  if (data === undefined) return new Uint8Array(0);
  const parts = Array.isArray(data) ? data : [data];
  return Buffer.concat(parts.map((b) => new Uint8Array(b)));
}

/**
 * Saves `model` into folder `dir` (created; an existing model there is replaced). The folder
 * is assembled under a temporary name and renamed into place, so `dir` never holds half a model.
 */
export async function saveModel(model: tfl.LayersModel, dir: string): Promise<void> {
  let files: { json: string; bin: Uint8Array } | undefined;
  await model.save(
    tf.io.withSaveHandler(async (artifacts) => {
      const manifest: tf.io.WeightsManifestConfig = [{ paths: [WEIGHTS_BIN], weights: artifacts.weightSpecs ?? [] }];
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology as object,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: manifest,
      };
      if (artifacts.trainingConfig) modelJson.trainingConfig = artifacts.trainingConfig;
      if (artifacts.userDefinedMetadata) modelJson.userDefinedMetadata = artifacts.userDefinedMetadata;
      files = { json: JSON.stringify(modelJson), bin: toBytes(artifacts.weightData) };
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    }),
  );
  if (!files) throw new Error(`saveModel ${dir}: tfjs produced no artifacts`);
  const { json, bin } = files;
  await publishDir(
    path.resolve(dir),
    async (tmp) => {
      await fs.writeFile(path.join(tmp, WEIGHTS_BIN), bin);
      await fs.writeFile(path.join(tmp, MODEL_JSON), json);
    },
    { replace: true },
  );
}

/** Loads a LayersModel saved by `saveModel` (or any tfjs layers-format folder). */
export async function loadModel(dir: string): Promise<tfl.LayersModel> {
  const jsonPath = path.join(dir, MODEL_JSON);
  let text: string;
  try {
    text = await fs.readFile(jsonPath, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`loadModel: no model at ${jsonPath} (${code ?? (err as Error).message})`);
  }
  let modelJson: tf.io.ModelJSON;
  try {
    modelJson = JSON.parse(text) as tf.io.ModelJSON;
  } catch (err) {
    throw new Error(`loadModel: ${jsonPath} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof modelJson !== 'object' || modelJson === null || !modelJson.modelTopology) {
    throw new Error(`loadModel: ${jsonPath} has no modelTopology (not a tfjs layers model)`);
  }
  if (!Array.isArray(modelJson.weightsManifest)) {
    throw new Error(`loadModel: ${jsonPath} has no weightsManifest`);
  }
  const artifacts = await tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
    const specs: tf.io.WeightsManifestEntry[] = [];
    const buffers: Uint8Array[] = [];
    for (const group of manifest) {
      specs.push(...group.weights);
      for (const p of group.paths) {
        const file = path.join(dir, p);
        try {
          buffers.push(await fs.readFile(file));
        } catch (err) {
          throw new Error(
            `loadModel: weights file ${file} listed in ${jsonPath} is unreadable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
          );
        }
      }
    }
    const all = Buffer.concat(buffers);
    const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
    return [specs, data];
  });
  try {
    return await tfl.loadLayersModel(tf.io.fromMemory(artifacts));
  } catch (err) {
    throw new Error(`loadModel: ${jsonPath} could not be loaded: ${(err as Error).message}`);
  }
}
