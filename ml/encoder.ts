// The pluggable alternative to SimCLR (paper Table 3): a frozen, pretrained feature extractor
// saved as a tfjs LayersModel that maps [N, S, S, 3] images in [0, 1] to [N, D] features
// (any normalisation the extractor needs must be inside the model).
import type * as tfl from '@tensorflow/tfjs-layers';
import { checkImageInput } from './features.js';
import { loadModel } from './model-io.js';

export async function loadPretrainedEncoder(path: string, imageSize: number): Promise<tfl.LayersModel> {
  const model = await loadModel(path);
  try {
    checkImageInput(model, imageSize, imageSize, `pretrained encoder ${path}`);
    const out = model.outputs;
    if (out.length !== 1 || out[0].shape.length !== 2) {
      throw new Error(
        `pretrained encoder ${path}: output must be [N, D] features, model gives ${out.map((t) => `[${t.shape.join(', ')}]`).join(', ')}`,
      );
    }
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}
