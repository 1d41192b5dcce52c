#pragma once

// The instruction sets of this CPU that decide how fast each precision of
// inference runs: AVX2 and AVX-512 for float32, VNNI for int8, AMX for bf16
// and int8. Read with CPUID and, for the register state the operating system
// must save, XGETBV; none on other architectures.

#include <cstdint>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace resnet {

/// What this CPU offers, as the kernel also reports it in /proc/cpuinfo.
struct CpuFeatures {
  /// AVX2 and FMA: the float32 kernels of every x86 CPU since 2013.
  bool avx2 = false;
  /// AVX-512 (F, BW, VL, DQ) with the operating system saving its registers.
  bool avx512 = false;
  /// AVX-512 VNNI: int8 dot products in one instruction (Cascade Lake, Zen 4
  /// and later).
  bool avx512_vnni = false;
  /// AVX-VNNI: the same on 256-bit registers (Alder Lake and later).
  bool avx_vnni = false;
  /// AVX-512 BF16: bf16 dot products (Cooper Lake, Zen 4 and later).
  bool avx512_bf16 = false;
  /// AMX tiles with bf16 products (Sapphire Rapids and later), enabled by
  /// the operating system.
  bool amx_bf16 = false;
  /// AMX tiles with int8 products.
  bool amx_int8 = false;

  /// The features present, as `lscpu` spells their flags: "avx2 avx512f
  /// avx512_vnni amx_bf16 amx_int8"; "none" without any.
  std::string to_string() const {
    std::string s;
    const auto add = [&s](bool on, const char* name) {
      if (on) {
        s += (s.empty() ? "" : " ") + std::string(name);
      }
    };
    add(avx2, "avx2");
    add(avx512, "avx512f");
    add(avx512_vnni, "avx512_vnni");
    add(avx_vnni, "avx_vnni");
    add(avx512_bf16, "avx512_bf16");
    add(amx_bf16, "amx_bf16");
    add(amx_int8, "amx_int8");
    return s.empty() ? "none" : s;
  }
};

/// The features of the CPU this runs on.
inline CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7 || !__get_cpuid(1, &a, &b, &c, &d)) {
    return f;
  }
  const bool osxsave = (c >> 27) & 1u, fma = (c >> 12) & 1u;
  uint64_t xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<uint64_t>(hi) << 32) | lo;
  }
  const bool ymm = (xcr0 & 0x6u) == 0x6u; // SSE and AVX state
  const bool zmm = ymm && (xcr0 & 0xe0u) == 0xe0u; // opmask, ZMM halves
  const bool tiles = (xcr0 & 0x60000u) == 0x60000u; // AMX tile config, data
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned leaf7_b = b, leaf7_c = c, leaf7_d = d;
  __cpuid_count(7, 1, a, b, c, d);
  const unsigned leaf7_1_a = a;
  f.avx2 = ymm && fma && ((leaf7_b >> 5) & 1u);
  const bool f512 = (leaf7_b >> 16) & 1u, dq = (leaf7_b >> 17) & 1u,
             bw = (leaf7_b >> 30) & 1u, vl = (leaf7_b >> 31) & 1u;
  f.avx512 = zmm && f512 && dq && bw && vl;
  f.avx512_vnni = zmm && f512 && ((leaf7_c >> 11) & 1u);
  f.avx_vnni = ymm && ((leaf7_1_a >> 4) & 1u);
  f.avx512_bf16 = zmm && f512 && ((leaf7_1_a >> 5) & 1u);
  f.amx_bf16 = tiles && ((leaf7_d >> 22) & 1u) && ((leaf7_d >> 24) & 1u);
  f.amx_int8 = tiles && ((leaf7_d >> 25) & 1u) && ((leaf7_d >> 24) & 1u);
#endif
  return f;
}

} // namespace resnet
