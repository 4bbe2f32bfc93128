// `npm run schema`: writes pipelines/schema.json from the definition in client/pipeline-schema.ts.
// The file is committed for editors' YAML language servers; test/client/pipeline.test.ts fails
// when it is out of date.
import { writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { format, resolveConfig } from 'prettier';
import { PipelineSchema, schemaFile } from '../client/pipeline-schema.js';

/** The file's text: what `prettier --write` would leave, so that `npm run lint` accepts it. */
export async function renderSchema(): Promise<string> {
  // Identification and documentation first, as readers expect (TypeBox puts options after the
  // properties): keys listed before a spread keep their place and take the spread's values.
  const ordered = { $schema: '', $id: '', title: '', description: '', ...PipelineSchema };
  const json = JSON.stringify(ordered, null, 2);
  return format(json, { ...(await resolveConfig(schemaFile)), filepath: schemaFile });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await writeFile(schemaFile, await renderSchema());
  console.log(`wrote ${schemaFile}`);
}
