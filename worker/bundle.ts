// The workflow bundle: the workflow code (workflows/index.ts and what it imports) packed by
// webpack into one script for the SDK's sandbox. Sources (tsx, the tests) bundle it when the
// first worker is created; the compiled build (scripts/build.ts) bundles it once into
// dist/<build>/workflow-bundle.js, which its workers load as it is: webpack takes seconds.
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, DefaultLogger, type WorkflowBundleOption, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { repoRoot } from '../data/paths.js';

export const WORKFLOW_BUNDLE_FILE = 'workflow-bundle.js';

/**
 * Bundles the workflow sources. They are ESM TypeScript whose relative imports end in `.js`
 * (NodeNext); webpack is told to try the `.ts` file for them.
 */
export function bundleWorkflows(): Promise<WorkflowBundleWithSourceMap> {
  return bundleWorkflowCode({
    workflowsPath: join(repoRoot, 'workflows', 'index.ts'),
    logger: new DefaultLogger('WARN'),
    webpackConfigHook: (config) => ({
      ...config,
      resolve: { ...config.resolve, extensionAlias: { '.js': ['.ts', '.js'] } },
    }),
  });
}

/** Writes the bundle into `dir` (the build's output folder); returns its path. */
export async function writeWorkflowBundle(dir: string): Promise<string> {
  const file = join(dir, WORKFLOW_BUNDLE_FILE);
  await writeFile(file, (await bundleWorkflows()).code);
  return file;
}

/**
 * The prebuilt bundle of the build this module was compiled into (`<build>/worker/bundle.js`
 * next to `<build>/workflow-bundle.js`); undefined when running the TypeScript sources. The
 * build writes both before it marks itself complete, so they are the same sources.
 */
export function prebuiltWorkflowBundle(): WorkflowBundleOption | undefined {
  if (!import.meta.url.endsWith('.js')) return undefined;
  const codePath = fileURLToPath(new URL(`../${WORKFLOW_BUNDLE_FILE}`, import.meta.url));
  return existsSync(codePath) ? { codePath } : undefined;
}
