// The pipeline's `attack:` section (attacks/types.ts's configs, one variant per attack): the
// keys every attack takes, each attack's own keys, and which keys each attack refuses.
import Type from 'typebox';
import { definition, forbid, fraction, nonEmpty, optional, positive, positiveInt, when } from './schema-builders.js';

/** The attack-specific keys, each allowed for some attacks only. */
const ATTACK_OPTIONS = [
  'trigger',
  'corner',
  'alpha',
  'k',
  's',
  'coverNoise',
  'eps',
  'stepSize',
  'steps',
  'surrogateWidth',
  'surrogateEpochs',
  'bits',
  'trainSteps',
  'width',
  'testAlpha',
  'pieces',
  'pieceRate',
  'delta',
  'testDelta',
  'frequency',
] as const;

/** The attack-specific keys an attack does not take. */
function otherThan(...allowed: (typeof ATTACK_OPTIONS)[number][]): string[] {
  return ATTACK_OPTIONS.filter((k) => !allowed.includes(k));
}

export const Attack = definition(
  'attack',
  Type.Object(
    {
      name: Type.Enum(['badnets', 'blend', 'wanet', 'lc', 'sig', 'issba', 'adap-patch', 'adap-blend']),
      targetClass: Type.Integer({ minimum: 0 }),
      rate: Type.Number({
        exclusiveMinimum: 0,
        maximum: 1,
        description: 'Fraction of the whole training set poisoned (LC too: its samples all come from the target class).',
      }),
      coverRate: optional(fraction()),
      seed: Type.Integer(),
      trigger: optional(nonEmpty()),
      corner: optional(Type.Enum(['upper-left', 'lower-right'])),
      alpha: optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
      k: optional(Type.Integer({ minimum: 2 })),
      s: optional(positive()),
      coverNoise: optional(Type.Number({ minimum: 0 })),
      eps: optional(Type.Number({ exclusiveMinimum: 0, maximum: 255, description: 'L-inf bound in units of 1/255 (LC 16, ISSBA 8).' })),
      stepSize: optional(Type.Number({ exclusiveMinimum: 0, description: 'LC: PGD step in units of 1/255 (1.5).' })),
      steps: optional(Type.Integer({ minimum: 0, description: 'LC: PGD steps (30).' })),
      surrogateWidth: optional(positiveInt({ description: 'LC: ResNet-18 width of the surrogate classifier (8).' })),
      surrogateEpochs: optional(positiveInt({ description: 'LC: epochs of the surrogate classifier (4).' })),
      bits: optional(positiveInt({ description: 'ISSBA: length of the secret (20).' })),
      trainSteps: optional(positiveInt({ description: 'ISSBA: encoder/decoder training steps of 32 images (400).' })),
      width: optional(positiveInt({ description: "ISSBA: channels of the encoder's first layer (16)." })),
      testAlpha: optional(Type.Number({ exclusiveMinimum: 0, maximum: 1, description: 'Adap-Blend: blend weight at test time (0.2).' })),
      pieces: optional(positiveInt({ description: 'Adap-Blend: pieces of the trigger, a square number (16).' })),
      delta: optional(Type.Number({ exclusiveMinimum: 0, maximum: 255, description: 'SIG: amplitude in units of 1/255 (20).' })),
      testDelta: optional(Type.Number({ exclusiveMinimum: 0, maximum: 255, description: 'SIG: amplitude at test time (delta).' })),
      frequency: optional(Type.Number({ exclusiveMinimum: 0, description: 'SIG: periods across the image width (6).' })),
      pieceRate: optional(
        Type.Number({
          exclusiveMinimum: 0,
          exclusiveMaximum: 1,
          description: 'Adap-Blend: fraction of the pieces per training image (0.5).',
        }),
      ),
    },
    {
      description: 'Poison the (clean) dataset before auditing it, for evaluation with ground truth.',
      additionalProperties: false,
      allOf: [
        when('name', 'badnets', forbid(...otherThan('trigger', 'corner'))),
        when('name', 'blend', forbid(...otherThan('trigger', 'alpha'))),
        when('name', 'wanet', forbid(...otherThan('k', 's', 'coverNoise'))),
        when('name', 'lc', forbid(...otherThan('trigger', 'eps', 'stepSize', 'steps', 'surrogateWidth', 'surrogateEpochs'), 'coverRate')),
        when('name', 'sig', forbid(...otherThan('delta', 'testDelta', 'frequency'), 'coverRate')),
        when('name', 'issba', forbid(...otherThan('eps', 'bits', 'trainSteps', 'width'))),
        when('name', 'adap-patch', forbid(...otherThan())),
        when('name', 'adap-blend', forbid(...otherThan('trigger', 'alpha', 'testAlpha', 'pieces', 'pieceRate'))),
      ],
    },
  ),
);
