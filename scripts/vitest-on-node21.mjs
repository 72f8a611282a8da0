// Loaded with --import when the Node matrix runs vitest on Node 21, which
// vitest 4 does not support: its bundler calls util.styleText with an array
// of formats, which Node 21's styleText rejects. This applies them one by
// one instead. Test harness only; threadleak itself needs nothing on 21.
import util from 'node:util';
import { syncBuiltinESMExports } from 'node:module';

const styleText = util.styleText;
util.styleText = (format, text, ...rest) =>
  Array.isArray(format) ? format.reduceRight((styled, one) => styleText(one, styled), text) : styleText(format, text, ...rest);
syncBuiltinESMExports(); // named imports of 'node:util' see the replacement too
