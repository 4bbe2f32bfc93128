// Builders for the JSON Schema constructs TypeBox has no builder for, and the small value
// schemas the pipeline format repeats; shared by client/pipeline-schema.ts and its sections.
import Type, { type Static, type TSchema, type TSchemaOptions, type TUnsafe } from 'typebox';

/** A schema stored under `definitions`; `ref` is its `$ref`, typed as the schema. */
export function definition<T extends TSchema>(name: string, schema: T) {
  return { name, schema, ref: Type.Unsafe<Static<T>>({ $ref: `#/definitions/${name}` }) };
}

/** `oneOf` (TypeBox's Union writes `anyOf`; a value matching both forms must fail here). */
export function oneOf<T extends TSchema[]>(types: [...T], options: TSchemaOptions = {}): TUnsafe<Static<T[number]>> {
  return Type.Unsafe<Static<T[number]>>({ ...options, oneOf: types });
}

/**
 * If `key` is `value`, `then` applies. As in the hand-written schema, the `if` does not require
 * the key: when it is missing (an error of its own) every variant's `then` applies.
 */
export function when(key: string, value: string, then: Record<string, unknown>) {
  return { if: { properties: { [key]: { const: value } } }, then };
}

/** None of `keys` may be present (describeErrors lists the present ones from this shape). */
export function forbid(...keys: string[]) {
  return { not: { anyOf: keys.map((k) => ({ required: [k] })) } };
}

export const positiveInt = (options: TSchemaOptions = {}) => Type.Integer({ minimum: 1, ...options });
export const nonEmpty = (options: TSchemaOptions = {}) => Type.String({ minLength: 1, ...options });
export const positive = () => Type.Number({ exclusiveMinimum: 0 });
export const fraction = () => Type.Number({ minimum: 0, maximum: 1 });
/** Three numbers, one per channel (R, G, B). */
export const rgb = (item: TSchema, options: TSchemaOptions = {}) =>
  Type.Unsafe<[number, number, number]>(Type.Array(item, { minItems: 3, maxItems: 3, ...options }));
export const optional = Type.Optional;
