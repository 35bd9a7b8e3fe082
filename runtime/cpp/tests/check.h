// Minimal assertions for the ctest programs: CHECK(cond) and CHECK_THROWS_WITH(expr, substring).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

inline int& adatsqFailures() {
    static int n = 0;
    return n;
}

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++adatsqFailures();                                                      \
        }                                                                            \
    } while (0)

#define CHECK_THROWS_WITH(expr, substring)                                                        \
    do {                                                                                          \
        std::string adatsqMsg_;                                                                   \
        try {                                                                                     \
            expr;                                                                                 \
        } catch (std::exception const& e) {                                                       \
            adatsqMsg_ = e.what();                                                                \
        }                                                                                         \
        if (adatsqMsg_.find(substring) == std::string::npos) {                                    \
            std::fprintf(stderr, "%s:%d: expected an error containing \"%s\", got \"%s\"\n", __FILE__, \
                         __LINE__, std::string(substring).c_str(), adatsqMsg_.c_str());           \
            ++adatsqFailures();                                                                   \
        }                                                                                         \
    } while (0)

#define CHECK_DONE()                                                              \
    do {                                                                          \
        if (adatsqFailures() != 0) std::fprintf(stderr, "%d failure(s)\n", adatsqFailures()); \
        return adatsqFailures() == 0 ? 0 : 1;                                     \
    } while (0)
