// The ES module entry of threadleak/register (`node --import threadleak/register`):
// it runs the CommonJS one, so that loading both ways installs it once. Through
// require(), not import: the ES loader would parse the CommonJS module for its
// exports first (it has none to give), which costs startup time.
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./register.js');
