// Reads and writes fieldsync records with automerge JS, for tests/js_interop.rs.
//
//   node interop.mjs read FILE          print the document as JSON (types tagged)
//   node interop.mjs edit IN OUT        concurrent-style edits, saved to OUT
//   node interop.mjs create OUT         a new record made entirely by automerge JS
//   node interop.mjs plain-string IN OUT  pushes a plain JS string to the `tags`
//                                          list (automerge 3 makes it a text object)
//
// In automerge 3, a plain JS string is collaborative text; fields declared as
// `string`, `reference` or a list of strings take `new A.ImmutableString(..)`.
import * as A from "@automerge/automerge";
import { readFileSync, writeFileSync } from "node:fs";

const [mode, a, b] = process.argv.slice(2);

function tagged(v) {
  if (A.isCounter(v)) return { counter: v.value };
  if (A.isImmutableString(v)) return { string: v.toString() };
  if (v instanceof Date) return { timestamp: v.getTime() };
  if (typeof v === "string") return { text: v };
  if (Array.isArray(v)) return { list: v.map(tagged) };
  if (typeof v === "number") return Number.isInteger(v) ? { int: v } : { float: v };
  if (typeof v === "boolean") return { bool: v };
  return { other: String(v) };
}

if (mode === "read") {
  const doc = A.load(new Uint8Array(readFileSync(a)));
  const out = {};
  for (const [k, v] of Object.entries(doc)) out[k] = tagged(v);
  out["$heads"] = A.getHeads(doc);
  console.log(JSON.stringify(out));
} else if (mode === "edit") {
  let doc = A.load(new Uint8Array(readFileSync(a)));
  doc = A.change(doc, (d) => {
    d.qty = 99;
    d.visits.increment(5);
    A.splice(d, ["notes"], 0, 0, "JS: ");
    d.tags.push(new A.ImmutableString("js"));
  });
  writeFileSync(b, A.save(doc));
} else if (mode === "plain-string") {
  let doc = A.load(new Uint8Array(readFileSync(a)));
  doc = A.change(doc, (d) => {
    d.tags.push("oops");
  });
  writeFileSync(b, A.save(doc));
} else if (mode === "create") {
  const doc = A.from({
    name: new A.ImmutableString("made in JS"),
    qty: 7,
    price: 2.5,
    active: true,
    due: new Date(1790000000000),
    visits: new A.Counter(3),
    notes: "collaborative text",
    tags: [new A.ImmutableString("a"), new A.ImmutableString("b")],
    owner: new A.ImmutableString("p1"),
  });
  writeFileSync(a, A.save(doc));
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
