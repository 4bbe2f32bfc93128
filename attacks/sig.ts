// SIG (Barni, Kallas and Tondi 2019, "A new backdoor attack in CNNs by training set corruption
// without label poisoning"): a horizontal sinusoid added to target-class images, labels kept.
// The network learns the signal as a shortcut for the target class; at test time the same
// signal on any image pulls it there. Not one of the paper's seven attacks: it is the standard
// clean-label baseline of BackdoorBench, and the second clean-label attack of our matrix next
// to LC (LC's trigger is a patch, SIG's a global faint pattern).
import { checkImage, type Attack, type SigConfig } from './types.js';

/** round(clip(x + delta * sin(2 pi j f / w))) per byte, j the column; the same on every row and channel. */
function addSignal(img: Uint8Array, h: number, w: number, delta: number, frequency: number): Uint8Array {
  const wave = Float64Array.from({ length: w }, (_, j) => delta * Math.sin((2 * Math.PI * j * frequency) / w));
  const out = new Uint8Array(img.length);
  for (let i = 0; i < h; i++)
    for (let j = 0; j < w; j++)
      for (let c = 0; c < 3; c++) {
        const k = (i * w + j) * 3 + c;
        out[k] = Math.round(Math.min(255, Math.max(0, img[k] + wave[j])));
      }
  return out;
}

export function createSig(cfg: SigConfig, imageSize: number): Attack {
  const delta = cfg.delta ?? 20;
  const testDelta = cfg.testDelta ?? delta;
  const frequency = cfg.frequency ?? 6;
  for (const [k, v] of [
    ['delta', delta],
    ['testDelta', testDelta],
  ] as const)
    if (!(v > 0 && v <= 255)) throw new Error(`sig: ${k} must be in (0, 255], got ${v}`);
  if (!(frequency > 0)) throw new Error(`sig: frequency must be positive, got ${frequency}`);
  const apply = (img: Uint8Array, h: number, w: number, d: number): Uint8Array => {
    checkImage('sig', img, h, w, imageSize);
    return addSignal(img, h, w, d, frequency);
  };
  return {
    name: 'sig',
    applyTrain: (img, h, w) => apply(img, h, w, delta),
    applyTest: (img, h, w) => apply(img, h, w, testDelta),
  };
}
