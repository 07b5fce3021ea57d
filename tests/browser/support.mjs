// What the browser scripts share.
import { readFile } from 'node:fs/promises';

/**
 * Only while developing the SDK: with HERALD_TEST_SDK=path/to/herald.js the
 * page gets that file at `/herald.js` instead of the one the server has
 * compiled in (a binary built before a change to the SDK serves the old
 * one). The suite never sets it: it tests what the server serves.
 */
export async function serveSdkUnderTest(target) {
  const file = process.env.HERALD_TEST_SDK;
  if (!file) return;
  const body = await readFile(file, 'utf8');
  await target.route('**/herald.js', (route) =>
    route.fulfill({ contentType: 'text/javascript; charset=utf-8', body }));
}
