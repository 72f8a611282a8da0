// stack_linux.h — internals shared by the parts of the Linux stack backend:
// stack_linux.cc (the capture sequence), stack_checks_linux.cc (the checks
// before a probe),
// stack_probe_linux.cc (one probe and the wait for its answer),
// stack_handler_linux.cc (the signal handler that answers it),
// stack_signal_linux.cc (choosing and installing the probe signal),
// stack_procfs_linux.cc (what the kernel shows about a thread, memory reads
// that cannot fault, the stack scan) and stack_symbols_linux.cc
// (symbolization). Not part of the backend interface (see stack.h).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "stack.h"

namespace threadleak {
namespace linux_stack {

// How far above SP a stack is scanned (and copied, in copy mode).
constexpr size_t kScanBytes = 64 * 1024;

// The stack the probe's handler needs below the kernel's signal frame: the
// handler itself with its copy of the stack (measured: under 1 KB), and the
// unwinder when it unwinds in the handler (about 1.2 KB more, measured).
constexpr size_t kHandlerBytes = 2048;
constexpr size_t kUnwindBytes = 4096;

// A frame before symbolization.
struct RawFrame {
  uintptr_t address = 0;
  bool exact = false;    // a PC (look it up as is), not a return address (look up address - 1)
  bool scanned = false;
};

// One line of /proc/self/maps.
struct Mapping {
  uintptr_t start = 0;
  uintptr_t end = 0;
  bool readable = false;
  bool executable = false;
  std::string path;  // '' for anonymous mappings; "[stack]", "[vdso]"... for special ones
  uint64_t inode = 0;  // the mapped file's inode; 0: none
};

// The fields of /proc/self/task/TID/status that the probe needs.
struct ThreadStatus {
  char state = '?';           // R S D T t Z X ...
  uint64_t blocked = 0;       // SigBlk: bit (n - 1) set when signal n is blocked
  uint64_t shared_pending = 0;  // ShdPnd: signals pending for the whole process
  uint64_t pending = 0;         // SigPnd: signals pending for this thread alone
  // How often it left a CPU to sleep (voluntary_ctxt_switches), and because
  // it was preempted (nonvoluntary_ctxt_switches).
  uint64_t voluntary_switches = 0;
  uint64_t involuntary_switches = 0;
};

// Reads /proc/self/task/TID/status. Returns 0, or the errno of the failure
// (ENOENT/ESRCH: no such thread in this process).
int ReadThreadStatus(pid_t tid, ThreadStatus* status);

// The thread's start time in clock ticks since boot (field 22 of its stat):
// with the tid, an identity that survives tid reuse. 0 when unreadable.
uint64_t ThreadStartTicks(pid_t tid);

// True while /proc/self/task/TID exists.
bool ThreadExists(pid_t tid);

int64_t NowNs();  // CLOCK_MONOTONIC

// What /proc/self/task/TID/syscall shows of a thread that is off CPU: the
// system call it is blocked in (-1 when blocked outside one), SP and PC.
struct KernelView {
  long syscall = -1;
  uintptr_t sp = 0;
  uintptr_t pc = 0;
};
enum class KernelRegisters { kKnown, kRunning, kUnavailable };
KernelRegisters ReadKernelRegisters(pid_t tid, KernelView* view);

// Parses /proc/self/maps (sorted by address, as the kernel prints it).
bool ReadMaps(std::vector<Mapping>* maps);

// The mapping of `maps` (as ReadMaps gives them) that holds `address`, or null.
const Mapping* FindMapping(const std::vector<Mapping>& maps, uintptr_t address);

// Copies [address, address + length) of this process's memory into `buffer`
// with process_vm_readv, page by page, so an unmapped page ends the copy
// instead of faulting. Returns the number of bytes copied from the start.
// Async-signal-safe: one system call, no allocation, errno preserved.
size_t CopyOwnMemory(uintptr_t address, void* buffer, size_t length);

// How many bytes just below `address` are readable, counting whole pages
// downwards and stopping at the first that is not (a guard page, a hole), at
// most `limit`. Async-signal-safe, like CopyOwnMemory.
size_t ReadableBelow(uintptr_t address, size_t limit);

// False where process_vm_readv is denied (seccomp) or missing: then the two
// functions above read nothing and tell nothing. Not for signal handlers.
bool OwnMemoryReadable();

// Appends to `out` the words of the stack above `sp` that look like return
// addresses (they point just after a call instruction in an executable
// mapping), innermost first, marked scanned. Reads at most kScanBytes and never
// past the end of the mapping that holds `sp`. When `copy` is given it holds
// `copy_length` bytes copied from `sp` and is scanned instead of live memory.
void ScanStack(uintptr_t sp, const unsigned char* copy, size_t copy_length,
               const std::vector<Mapping>& maps, std::vector<RawFrame>* out);

// Appends the kernel's view of a thread that cannot be (or was not) probed:
// its PC, then a scan from its SP. The kernel shows them only while the
// thread is off CPU: a running thread is looked at again, with short sleeps,
// until `retry_until_ns` (CLOCK_MONOTONIC). False when no SP was shown.
bool AppendKernelView(pid_t tid, int64_t retry_until_ns, std::vector<RawFrame>* out);

// A probe's token (si_value): kProbeTag in the top 16 bits, kClaimed once a
// handler owns the slot, the slot's index, and a generation.
constexpr uint64_t kProbeTag = 0x71ea000000000000ull;
constexpr uint64_t kProbeTagMask = 0xffff000000000000ull;
constexpr uint64_t kClaimed = 1ull << 47;
constexpr int kSlotShift = 40;  // bits 40..43: the slot's index
constexpr int kSlotCount = 16;  // captures under way at once
constexpr uint64_t kGenerationMask = (1ull << kSlotShift) - 1;
constexpr int kMaxFrames = 128;

// The memory a handler writes into, one per capture under way. Allocated
// outside any handler, never freed (stack_handler_linux.cc).
struct ProbeSlot {
  std::atomic<uint64_t> claim{0};  // armed token, token | kClaimed, or 0 when idle
  std::atomic<uint32_t> done{0};   // futex word: 1 once the handler has finished
  std::atomic<pid_t> target{0};
  bool unwind = false;             // unwind in the handler, or only copy the stack
  bool check_room = false;         // unwind only with kUnwindBytes of stack left
  bool has_registers = false;
  uintptr_t pc = 0, sp = 0;
  int count = 0;
  uintptr_t last_sp = 0;           // the stack pointer in the outermost unwound frame
  uintptr_t frames[kMaxFrames];
  bool exact[kMaxFrames];
  size_t copied = 0;
  unsigned char stack[kScanBytes];
};
static_assert(sizeof(std::atomic<uint32_t>) == 4 && std::atomic<uint64_t>::is_always_lock_free,
              "the handler needs lock-free atomics and a 32-bit futex word");
// The slots by index, as tokens name them; null until first used.
extern std::atomic<ProbeSlot*> g_probe_slots[kSlotCount];

// Chooses the probe signal and installs the handler on it for good, after
// calling once everything the handler calls; decides whether the handler
// unwinds or only copies the stack. Returns the signal, or 0 with *problem set.
int InstallProbeHandler(bool* unwind_in_handler, std::string* problem);
// True while the handler is still the action of `sig`.
bool ProbeHandlerIsOurs(int sig);

using SignalHandler = void (*)(int, siginfo_t*, void*);

// Chooses the probe signal and installs `handler` on it for good (see
// stack_signal_linux.cc). Returns the signal, or 0 with *problem set.
int InstallProbeSignal(SignalHandler handler, std::string* problem);

// True while `handler` is still the action of `sig`.
bool ProbeSignalIsOurs(int sig, SignalHandler handler);

// The checks before a probe (stack_checks_linux.cc): true when `tid` may be
// probed now, else result->error (and detail) say why not. *status is its
// status, read before; it is read again. Waits until `deadline` at most.
bool MayProbe(pid_t tid, int sig, int64_t deadline, ThreadStatus* status, StackResult* result);
// Never probe this thread again (it took a probe as its own signal).
void RememberSignalTaker(pid_t tid);

// The probe (stack_probe_linux.cc). No lock is held across a wait for an
// answer: a capture claims a slot for its target (one capture per target at a
// time; captures of other threads go on beside it), probes through it and
// releases it. Returns the slot, or -1 when none came free before `deadline`
// (another capture of the same thread, or every slot busy).
int ClaimSlot(pid_t tid, int64_t deadline);
void ReleaseSlot(int slot);
// The probe signal, installing it on the first call; 0 with *problem set when
// there is none (none free, turned off, or taken over since).
int ProbeSignal(std::string* problem);
// True when `tid` answered one of the latest probes (it may still be returning
// from the handler); Forget... once it is known to block the signal for good.
bool AnsweredRecently(pid_t tid);
void ForgetAnswered(pid_t tid);
// What Probe's result->detail says when the thread took the probe as one of
// its own signals (sigwaitinfo): result->error is "signal-blocked" then.
extern const char kTookProbe[];
// Probes `tid` with signal result->signal through `slot` (claimed for it)
// until `deadline` (CLOCK_MONOTONIC ns); on success appends its frames. Otherwise sets
// result->error (and detail). With `check_room` the handler unwinds only when
// kUnwindBytes of stack are left below it.
bool Probe(int slot, pid_t tid, bool check_room, int64_t deadline, std::vector<RawFrame>* raw, StackResult* result);
// Unwinds the calling thread.
void UnwindHere(std::vector<RawFrame>* raw);

// The function of the file mapped at `mapping` that holds `file_address` (an
// address in the file: the run-time address minus the load bias), from the
// file's .symtab (stack_elf_linux.cc): for functions dladdr cannot see.
// False when unknown. Call with Symbolize's lock held.
bool FileSymbol(const Mapping& mapping, uintptr_t file_address, std::string* name, uintptr_t* start);

// The path of the object loaded at `address` ('' when none is), from the maps
// Symbolize keeps (read again after a load or unload, not for JIT code).
std::string LoadedPath(uintptr_t address);

// Turns raw frames into StackFrames: dladdr for symbols (outside any signal
// handler: it takes the loader lock), /proc/self/maps for absolute module paths.
void Symbolize(const std::vector<RawFrame>& raw, std::vector<StackFrame>* out);

}  // namespace linux_stack
}  // namespace threadleak
