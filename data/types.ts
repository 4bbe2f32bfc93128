// The dataset as every stage sees it: labels and ids in memory, pixels read on demand, so
// that memory does not grow with the number of images.

/** A labelled image collection of fixed size HxWx3, uint8 NHWC. */
export interface ImageSource {
  /** Class names; a label is an index into this list. */
  readonly classes: readonly string[];
  readonly height: number;
  readonly width: number;
  /** Number of samples. */
  readonly size: number;
  /** Label of every sample. */
  readonly labels: Int32Array;
  /** Stable id of every sample (its path relative to the dataset root). */
  readonly ids: readonly string[];
  /** Pixels of the given samples, in the given order: indices.length * height * width * 3 bytes. */
  readImages(indices: ArrayLike<number>): Promise<Uint8Array>;
}

/** Ground truth written next to a dataset poisoned by `attacks/`. */
export interface PoisonTruth {
  attack: string;
  targetClass: number;
  /** Indices (into the poisoned training set) of poisoned samples. */
  poisoned: number[];
  /** Label of each poisoned sample before poisoning, aligned with `poisoned`. */
  sourceLabels: number[];
  /** Indices of cover samples (trigger applied, label kept), if the attack uses covers. */
  cover?: number[];
}
