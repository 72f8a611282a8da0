// npm's install script. On Linux, macOS and Windows it runs node-gyp-build:
// the prebuild when one matches this platform (the npm package carries one
// for linux x64/arm64 with glibc and musl, darwin x64/arm64 and win32
// x64/arm64, so an install needs no compiler), else a compile with node-gyp.
// Elsewhere there is no native backend: the thread functions throw
// ERR_THREADLEAK_UNSUPPORTED_PLATFORM without loading an addon, so none is
// built, and a machine without a C++ toolchain still installs the package
// (LeakTracker is plain JavaScript and works there).
if (process.platform === 'linux' || process.platform === 'darwin' || process.platform === 'win32') {
  await import('node-gyp-build/bin.js');
} else {
  console.log(`threadleak: no native backend for ${process.platform}, nothing to build`);
}
