// The error for bad input data, naming the offending file (its own module: every format reads it).
/** Bad input data: `file` is the offending file or folder, `reason` what is wrong with it. */
export class DatasetError extends Error {
  readonly file: string;
  readonly reason: string;
  constructor(file: string, reason: string) {
    super(`${file}: ${reason}`);
    this.name = 'DatasetError';
    this.file = file;
    this.reason = reason;
  }
}
