#!/usr/bin/env node
// Validate one glTF/GLB file with the Khronos glTF-Validator and print its report as JSON on stdout.
// Usage: node tests/js/validate_gltf.js FILE.glb    (install first: npm ci --prefix tests/js)
// External resources (for .gltf with separate files) are read from the file's folder.
"use strict";
const fs = require("fs");
const path = require("path");
const validator = require("gltf-validator");

const file = process.argv[2];
if (!file) {
  console.error("usage: validate_gltf.js FILE");
  process.exit(2);
}
const fullpath = path.resolve(file);
validator
  .validateBytes(new Uint8Array(fs.readFileSync(fullpath)), {
    uri: path.basename(fullpath),
    maxIssues: 0,
    writeTimestamp: false,
    externalResourceFunction: (uri) =>
      fs.promises.readFile(path.resolve(path.dirname(fullpath), decodeURIComponent(uri))).then((d) => new Uint8Array(d)),
  })
  .then((report) => {
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  })
  .catch((error) => {
    console.error(String(error));
    process.exit(1);
  });
