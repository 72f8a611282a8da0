// The ES module entry of threadleak/register (`node --import threadleak/register`):
// it runs the CommonJS one, so that loading both ways installs it once.
import './register.js';
