// The pipeline schema's validator (ajv, the checks client/pipeline.ts reports). Compiling it from
// the TypeBox definition (client/pipeline-schema.ts) loads some 400 modules and takes a few
// hundred milliseconds at every start, so the compiled build (scripts/build.ts) writes it once
// as standalone code next to this module, and a compiled process loads that instead. The
// TypeScript sources (tsx, the tests) compile it as before.
import { existsSync } from 'node:fs';
import type { Options, ValidateFunction } from 'ajv';

export const AJV_OPTIONS: Options = { allErrors: true, strict: false, verbose: true };

/** The standalone validator's file name, beside this module in a build. */
export const STANDALONE_VALIDATOR_FILE = 'pipeline-validator.standalone.js';

/** The validator: the build's standalone one when this is a compiled build that has it, else compiled now. */
export async function pipelineValidator(): Promise<ValidateFunction> {
  if (import.meta.url.endsWith('.js')) {
    const file = new URL(`./${STANDALONE_VALIDATOR_FILE}`, import.meta.url);
    if (existsSync(file)) return ((await import(file.href)) as { default: ValidateFunction }).default;
  }
  const [{ Ajv }, { PipelineSchema }] = await Promise.all([import('ajv'), import('./pipeline-schema.js')]);
  return new Ajv(AJV_OPTIONS).compile(PipelineSchema);
}

/** The validator as an ES module of standalone code (ajv), with the same options: for the build. */
export async function standaloneValidatorSource(): Promise<string> {
  const [{ Ajv }, standalone, { PipelineSchema }] = await Promise.all([
    import('ajv'),
    import('ajv/dist/standalone/index.js'),
    import('./pipeline-schema.js'),
  ]);
  const standaloneCode = standalone.default as unknown as typeof standalone.default.default;
  const ajv = new Ajv({ ...AJV_OPTIONS, code: { source: true, esm: true } });
  // ajv's ES module output still require()s its runtime helpers (e.g. ucs2length for maxLength).
  return `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n${standaloneCode(ajv, ajv.compile(PipelineSchema))}`;
}
