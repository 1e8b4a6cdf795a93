// node validate.mjs DOC.json...: parse AsyncAPI documents with the AsyncAPI project's own
// parser; print one JSON line per document: {file, valid, diagnostics}. (One node process
// for several documents: loading the parser takes most of the time.)
import { Parser } from '@asyncapi/parser';
import { readFileSync } from 'node:fs';

const parser = new Parser();
for (const file of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(readFileSync(file, 'utf8'));
  const found = diagnostics.map((d) => ({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
  const valid = document !== undefined && !found.some((d) => d.severity === 0);
  console.log(JSON.stringify({ file, valid, diagnostics: found }));
}
