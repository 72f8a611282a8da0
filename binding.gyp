{
  "targets": [
    {
      "target_name": "threadleak",
      "sources": ["native/addon.cc", "native/exit_watchdog.cc"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "defines": ["NAPI_VERSION=8"],
      "include_dirs": ["native"],
      "conditions": [
        ["OS=='linux'", {
          "sources": ["native/linux/threads_linux.cc", "native/linux/stack_linux.cc", "native/linux/stack_checks_linux.cc",
                      "native/linux/stack_probe_linux.cc", "native/linux/stack_handler_linux.cc",
                      "native/linux/stack_signal_linux.cc",
                      "native/linux/stack_symbols_linux.cc", "native/linux/stack_procfs_linux.cc",
                      "native/linux/stack_elf_linux.cc", "native/linux/procfs_linux.cc",
                      "native/linux/stat_fd_cache_linux.cc"],
          "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-fvisibility=hidden"],
          "ldflags": ["-Wl,-z,now", "-Wl,-z,nodelete", "-Wl,--version-script=<(module_root_dir)/native/linux/exports.map"]
        }],
        ["OS=='win'", {
          "sources": ["native/win32/threads_win32.cc", "native/win32/threads_toolhelp_win32.cc",
                      "native/win32/stack_win32.cc", "native/win32/stack_unwind_win32.cc",
                      "native/win32/stack_symbols_win32.cc"],
          "defines": ["UNICODE", "_UNICODE", "_WIN32_WINNT=0x0A00", "WIN32_LEAN_AND_MEAN", "NOMINMAX"],
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["/std:c++17", "/W3"]}}
        }],
        ["OS=='mac'", {
          "sources": ["native/darwin/threads_darwin.cc", "native/darwin/stack_darwin.cc",
                      "native/darwin/stack_walk_darwin.cc", "native/darwin/stack_symbols_darwin.cc"]
        }],
        ["OS!='linux' and OS!='win' and OS!='mac'", {
          "sources": ["native/unsupported/threads_unsupported.cc", "native/unsupported/stack_unsupported.cc"]
        }]
      ],
      "target_conditions": [
        ["OS=='mac'", {
          "xcode_settings": {
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
            "OTHER_CPLUSPLUSFLAGS": ["$(inherited)", "-Wall", "-Wextra"]
          }
        }]
      ]
    }
  ]
}
