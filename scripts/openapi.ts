// `npm run openapi`: writes docs/openapi.json, the API contract, from the code's schemas
// (src/api/openapi.ts). test/unit/openapi.test.ts fails when the checked-in file is stale.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openApiDocument } from '../src/api/openapi.js';
import { toastnetVersion } from '../src/version.js';

/** dist/scripts/ -> the repository's docs/. */
export const OPENAPI_FILE = fileURLToPath(new URL('../../docs/openapi.json', import.meta.url));

export const openApiText = (): string => `${JSON.stringify(openApiDocument(toastnetVersion()), null, 2)}\n`;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  fs.writeFileSync(OPENAPI_FILE, openApiText());
  process.stdout.write(`wrote ${OPENAPI_FILE}\n`);
}
