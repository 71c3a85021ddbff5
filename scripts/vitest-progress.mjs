// A vitest reporter beside the default one: a line as each test file starts. The default reporter names
// a file only when it ends, so when a run hangs (scripts/watchdog.mjs stops it after 5 silent minutes)
// the log did not say which files were running; now the files started and not reported done are those.
export default class Progress {
  onTestModuleStart(testModule) {
    process.stdout.write(`vitest: started ${testModule.relativeModuleId} (${testModule.project.name})\n`);
  }
}
