{
  "targets": [
    {
      "target_name": "kpr_bpf",
      "sources": ["src/kpr_bpf.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++20", "-std=gnu++17"],
      "cflags": ["<!@(pkg-config --cflags libbpf)", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-std=c++17", "-fexceptions"],
      "libraries": ["<!@(pkg-config --libs libbpf)"]
    }
  ]
}
