// A tiny ONNX encoder written by the test itself (never downloaded): Conv 1x1 (known weights) ->
// Relu -> GlobalAveragePool, serialised with protobufjs from the few messages of onnx.proto it
// needs (field numbers as in github.com/onnx/onnx onnx/onnx.proto). `encodeByHand` is the same
// function in plain JS, the known answer the tests compare ONNX Runtime's output with.
import { writeFile } from 'node:fs/promises';
import protobuf from 'protobufjs';

const ONNX_PROTO = `
syntax = "proto3";
package onnx;
message OperatorSetIdProto { string domain = 1; int64 version = 2; }
message TensorProto { repeated int64 dims = 1; int32 data_type = 2; repeated float float_data = 4; string name = 8; }
message AttributeProto { string name = 1; repeated int64 ints = 8; int32 type = 20; }
message NodeProto {
  repeated string input = 1; repeated string output = 2; string name = 3; string op_type = 4;
  repeated AttributeProto attribute = 5;
}
message Dimension { int64 dim_value = 1; string dim_param = 2; }
message TensorShapeProto { repeated Dimension dim = 1; }
message TensorTypeProto { int32 elem_type = 1; TensorShapeProto shape = 2; }
message TypeProto { TensorTypeProto tensor_type = 1; }
message ValueInfoProto { string name = 1; TypeProto type = 2; }
message GraphProto {
  repeated NodeProto node = 1; string name = 2; repeated TensorProto initializer = 5;
  repeated ValueInfoProto input = 11; repeated ValueInfoProto output = 12;
}
message ModelProto { int64 ir_version = 1; string producer_name = 2; GraphProto graph = 7; repeated OperatorSetIdProto opset_import = 8; }
`;
const FLOAT = 1; // TensorProto.DataType.FLOAT
const INTS = 7; // AttributeProto.AttributeType.INTS

export interface TinyOnnxOptions {
  /** Conv 1x1 weights, [channels out][3 in]. */
  weights: number[][];
  bias: number[];
  inputSize: number;
  layout?: 'nchw' | 'nhwc';
  /** A batch dimension fixed at export (no dynamic_axes); default dynamic ('N'). */
  fixedBatch?: number;
}

/**
 * Writes the model to `file`. Outputs: `spatial` (the Relu map, [N, D, S, S]) first, then
 * `pooled` ([N, D, 1, 1], the features).
 */
export async function writeTinyOnnx(file: string, o: TinyOnnxOptions): Promise<void> {
  const model = protobuf.parse(ONNX_PROTO).root.lookupType('onnx.ModelProto');
  const D = o.weights.length;
  const S = o.inputSize;
  const batch = o.fixedBatch ?? 'N';
  const value = (name: string, dims: (number | string)[]) => ({
    name,
    type: {
      tensorType: {
        elemType: FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  });
  const nhwc = o.layout === 'nhwc';
  const nodes = [
    ...(nhwc
      ? [
          {
            input: ['images'],
            output: ['x'],
            name: 'to_nchw',
            opType: 'Transpose',
            attribute: [{ name: 'perm', ints: [0, 3, 1, 2], type: INTS }],
          },
        ]
      : []),
    { input: [nhwc ? 'x' : 'images', 'W', 'B'], output: ['conv'], name: 'conv', opType: 'Conv' },
    { input: ['conv'], output: ['spatial'], name: 'relu', opType: 'Relu' },
    { input: ['spatial'], output: ['pooled'], name: 'pool', opType: 'GlobalAveragePool' },
  ];
  const message = model.fromObject({
    irVersion: 8,
    producerName: 'backdoor-audit tests',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'tiny-encoder',
      node: nodes,
      initializer: [
        { name: 'W', dims: [D, 3, 1, 1], dataType: FLOAT, floatData: o.weights.flat() },
        { name: 'B', dims: [D], dataType: FLOAT, floatData: o.bias },
      ],
      input: [value('images', nhwc ? [batch, S, S, 3] : [batch, 3, S, S])],
      output: [value('spatial', [batch, D, S, S]), value('pooled', [batch, D, 1, 1])],
    },
  });
  await writeFile(file, model.encode(message).finish());
}

/**
 * The model's `pooled` output for uint8 HWC images already inputSize x inputSize, computed by
 * hand: x = (pixel / 255 - mean) / std, relu(W x + b) per pixel, averaged over the pixels.
 */
export function encodeByHand(
  pixels: Uint8Array,
  n: number,
  size: number,
  o: Pick<TinyOnnxOptions, 'weights' | 'bias'> & { mean: number[]; std: number[] },
): number[][] {
  const P = size * size;
  return Array.from({ length: n }, (_, i) =>
    o.weights.map((w, k) => {
      let sum = 0;
      for (let p = 0; p < P; p++) {
        let v = o.bias[k];
        for (let c = 0; c < 3; c++) v += w[c] * ((pixels[(i * P + p) * 3 + c] / 255 - o.mean[c]) / o.std[c]);
        sum += Math.max(0, v);
      }
      return sum / P;
    }),
  );
}
