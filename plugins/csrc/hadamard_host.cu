// Host helpers shared by every C/C++ caller: the factorisation K = m.p and the Paley matrix H_m, the same
// constructions as plugins/hadamard.py (hadamard_factors, paley_base), so the TensorRT plugin needs no
// table from Python.
#include <stdint.h>

#include <vector>

#include "qlinear_kernels.h"

namespace {

bool is_prime(int n) {
  if (n < 2) return false;
  for (int d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

// Legendre symbol chi(a) mod q in {-1, 0, 1}.
int legendre(int a, int q) {
  a %= q;
  if (a < 0) a += q;
  if (a == 0) return 0;
  int64_t r = 1, b = a, e = (q - 1) / 2;
  while (e > 0) {
    if (e & 1) r = r * b % q;
    b = b * b % q;
    e >>= 1;
  }
  return r == 1 ? 1 : -1;
}

// 1: Paley I (m = q + 1, q = 3 mod 4); 2: Paley II (m = 2(q + 1), q = 1 mod 4); 0: neither.
int paley_kind(int m) {
  if (m >= 4 && is_prime(m - 1) && (m - 1) % 4 == 3) return 1;
  if (m >= 6 && m % 2 == 0 && is_prime(m / 2 - 1) && (m / 2 - 1) % 4 == 1) return 2;
  return 0;
}

bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

}  // namespace

extern "C" int adatsq_hadamard_factors(int64_t K, int* m, int* p) {
  if (K < 1 || m == nullptr || p == nullptr) return 1;
  for (int64_t pp = K & -K; pp >= 1; pp /= 2) {
    const int64_t mm = K / pp;
    if (is_pow2(mm)) {
      *m = 1;
      *p = static_cast<int>(K);
      return 0;
    }
    if (mm < (1 << 20) && paley_kind(static_cast<int>(mm))) {
      *m = static_cast<int>(mm);
      *p = static_cast<int>(pp);
      return 0;
    }
  }
  return 1;
}

extern "C" int adatsq_paley_matrix(int m, int8_t* out) {
  const int kind = paley_kind(m);
  if (kind == 0 || out == nullptr) return 1;
  if (kind == 1) {
    // H = I + S, S[0][1:] = 1, S[1:][0] = -1, S[1+i][1+j] = chi(j - i) (Jacobsthal, q = m - 1).
    const int q = m - 1;
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < m; ++j) {
        int s;
        if (i == 0 && j == 0) s = 0;
        else if (i == 0) s = 1;
        else if (j == 0) s = -1;
        else s = legendre(j - i, q);
        out[i * m + j] = static_cast<int8_t>(s + (i == j ? 1 : 0));
      }
    }
    return 0;
  }
  // Paley II: H = C (x) [[1, 1], [1, -1]] + I (x) [[1, -1], [-1, -1]], C[0][1:] = C[1:][0] = 1,
  // C[1+i][1+j] = chi(j - i) (q = m/2 - 1, C symmetric with zero diagonal).
  const int q = m / 2 - 1;
  const int n = q + 1;
  std::vector<int> c(static_cast<size_t>(n) * n, 0);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      if (i == 0 && j == 0) c[i * n + j] = 0;
      else if (i == 0 || j == 0) c[i * n + j] = 1;
      else c[i * n + j] = legendre(j - i, q);
    }
  }
  const int A[2][2] = {{1, 1}, {1, -1}};
  const int B[2][2] = {{1, -1}, {-1, -1}};
  for (int i = 0; i < n; ++i) {
    for (int r = 0; r < 2; ++r) {
      for (int j = 0; j < n; ++j) {
        for (int s = 0; s < 2; ++s) {
          const int v = c[i * n + j] * A[r][s] + (i == j ? B[r][s] : 0);
          out[(2 * i + r) * m + 2 * j + s] = static_cast<int8_t>(v);
        }
      }
    }
  }
  return 0;
}
