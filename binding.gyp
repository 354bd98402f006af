{
  "variables": {
    "has_libbpf": "<!(pkg-config --exists libbpf && echo true || echo false)"
  },
  "targets": [
    {
      "target_name": "tcp_chronograph",
      "sources": [
        "native/addon.cc",
        "native/errqueue.cc",
        "native/drain.cc",
        "native/sockopt.cc",
        "native/diag.cc",
        "native/attach.cc",
        "native/caps.cc"
      ],
      "dependencies": [
        "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-O2"],
      "conditions": [
        ["has_libbpf=='true'", {
          "sources": ["native/trace.cc"],
          "defines": ["TCP_CHRONO_TRACE"],
          "libraries": ["<!@(pkg-config --libs libbpf)"],
          "cflags_cc": ["<!@(pkg-config --cflags libbpf)"]
        }]
      ]
    }
  ]
}
