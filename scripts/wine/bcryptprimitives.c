/*
 * A stand-in bcryptprimitives.dll for wine 8, which lacks it. Only for running
 * the test suites under wine (scripts/test-wine.sh); never shipped.
 *
 * Rust's standard library (inside rolldown's native binding, which vitest 4
 * loads) imports ProcessPrng from bcryptprimitives.dll for its random numbers;
 * without the DLL the binding fails to load. ProcessPrng fills a buffer with
 * random bytes and always returns TRUE; here it is RtlGenRandom (exported by
 * advapi32 as SystemFunction036), which wine implements. RtlGenRandom takes a
 * ULONG length, so larger buffers are filled in chunks.
 */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
    while (size > 0) {
        ULONG chunk = size > 0x10000000 ? 0x10000000 : (ULONG)size;
        if (!RtlGenRandom(data, chunk)) return FALSE;
        data += chunk;
        size -= chunk;
    }
    return TRUE;
}
