# backdoor-audit worker / CLI image. Two targets:
#   cpu (default): Node 20, pure-JS / WebAssembly / (optional) libtensorflow CPU backend
#   gpu:           CUDA 11.8 + cuDNN 8 runtime with @tensorflow/tfjs-node-gpu
# The sources are TypeScript run through tsx, so the image holds them as they are (no dist/:
# the image has no TypeScript compiler; BACKDOOR_AUDIT_SOURCES=1 tells bin/ so, without its notice).

FROM node:20-bookworm-slim AS cpu
WORKDIR /app
ENV NODE_ENV=production \
    BACKDOOR_AUDIT_SOURCES=1 \
    BACKDOOR_AUDIT_STATE=/state \
    BACKDOOR_AUDIT_STORE=/artifacts \
    BACKDOOR_AUDIT_SHARED_DATA=/shared/data
COPY package.json package-lock.json ./
# Optional native TensorFlow packages download libtensorflow at install time; a failure there
# only removes them (npm treats them as optional) and the pure-JS backend is used. ONNX Runtime's
# CPU runtime is inside its npm package; its postinstall only fetches the CUDA provider (NuGet):
# skipped here (npm 10 ignores package.json's allowScripts). README: "Pretrained encoders from PyTorch".
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --no-audit --no-fund
COPY backend ./backend
COPY ml ./ml
COPY data ./data
COPY attacks ./attacks
COPY activities ./activities
COPY workflows ./workflows
COPY worker ./worker
COPY client ./client
COPY report ./report
COPY pipelines ./pipelines
COPY bin ./bin
COPY tsconfig.json ./
RUN mkdir -p /state /artifacts /app/.cache /app/out
# Exec form: node is PID 1 and gets the stop signal itself; bin/ turns the first SIGTERM into a
# graceful worker shutdown (see stop_grace_period in docker-compose.yml). A shell form would
# swallow it and the worker would be SIGKILLed mid-stage.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/backdoor-audit.js"]
CMD ["worker", "--queue", "audit-cpu"]

FROM nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04 AS gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - \
 && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production \
    BACKDOOR_AUDIT_SOURCES=1 \
    BACKDOOR_AUDIT_STATE=/state \
    BACKDOOR_AUDIT_STORE=/artifacts \
    BACKDOOR_AUDIT_SHARED_DATA=/shared/data
COPY --from=cpu /app /app
# The GPU build of the native backend (downloads libtensorflow with CUDA support).
RUN npm install --no-save --no-audit --no-fund @tensorflow/tfjs-node-gpu@4.22.0
RUN mkdir -p /state /artifacts
# As in the cpu stage: node is PID 1 and handles SIGTERM (graceful shutdown).
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "bin/backdoor-audit.js"]
CMD ["worker", "--queue", "audit-gpu"]
