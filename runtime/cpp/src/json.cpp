#include "adatsq/json.h"

#include <cmath>
#include <cstdlib>

namespace adatsq {

std::string typeName(Json::Type t) {
    switch (t) {
    case Json::Type::kNull: return "null";
    case Json::Type::kBool: return "a boolean";
    case Json::Type::kNumber: return "a number";
    case Json::Type::kString: return "a string";
    case Json::Type::kArray: return "an array";
    case Json::Type::kObject: return "an object";
    }
    return "?";
}

class JsonParser {
public:
    explicit JsonParser(std::string const& s) : mS(s) {}

    Json document() {
        Json v = value(0);
        ws();
        if (mPos != mS.size()) fail("trailing characters");
        return v;
    }

private:
    [[noreturn]] void fail(std::string const& why) const {
        throw JsonError("invalid JSON at byte " + std::to_string(mPos) + ": " + why);
    }
    void ws() {
        while (mPos < mS.size() && (mS[mPos] == ' ' || mS[mPos] == '\n' || mS[mPos] == '\r' || mS[mPos] == '\t')) ++mPos;
    }
    char peek() {
        ws();
        if (mPos >= mS.size()) fail("unexpected end");
        return mS[mPos];
    }
    void expect(char c) {
        if (peek() != c) fail(std::string("expected '") + c + "'");
        ++mPos;
    }
    bool literal(char const* word) {
        size_t n = std::char_traits<char>::length(word);
        if (mS.compare(mPos, n, word) == 0) {
            mPos += n;
            return true;
        }
        return false;
    }

    Json value(int depth) {
        if (depth > 256) fail("nesting too deep");
        Json v;
        char c = peek();
        if (c == '{') {
            ++mPos;
            v.mType = Json::Type::kObject;
            if (peek() == '}') {
                ++mPos;
                return v;
            }
            while (true) {
                if (peek() != '"') fail("expected a string key");
                std::string key = str();
                expect(':');
                if (v.mObject.count(key) != 0) fail("duplicate key \"" + key + "\"");
                v.mObject.emplace(key, value(depth + 1));
                v.mKeys.push_back(key);
                char d = peek();
                ++mPos;
                if (d == '}') break;
                if (d != ',') fail("expected ',' or '}'");
            }
        } else if (c == '[') {
            ++mPos;
            v.mType = Json::Type::kArray;
            if (peek() == ']') {
                ++mPos;
                return v;
            }
            while (true) {
                v.mArray.push_back(value(depth + 1));
                char d = peek();
                ++mPos;
                if (d == ']') break;
                if (d != ',') fail("expected ',' or ']'");
            }
        } else if (c == '"') {
            v.mType = Json::Type::kString;
            v.mString = str();
        } else if (literal("true")) {
            v.mType = Json::Type::kBool;
            v.mBool = true;
        } else if (literal("false")) {
            v.mType = Json::Type::kBool;
        } else if (literal("null")) {
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v.mType = Json::Type::kNumber;
            v.mNumber = num();
        } else {
            fail(std::string("unexpected character '") + c + "'");
        }
        return v;
    }

    double num() {
        size_t start = mPos;
        if (mS[mPos] == '-') ++mPos;
        auto digits = [&] {
            size_t d = mPos;
            while (mPos < mS.size() && mS[mPos] >= '0' && mS[mPos] <= '9') ++mPos;
            if (mPos == d) fail("expected a digit");
        };
        digits();
        if (mPos < mS.size() && mS[mPos] == '.') {
            ++mPos;
            digits();
        }
        if (mPos < mS.size() && (mS[mPos] == 'e' || mS[mPos] == 'E')) {
            ++mPos;
            if (mPos < mS.size() && (mS[mPos] == '+' || mS[mPos] == '-')) ++mPos;
            digits();
        }
        return std::strtod(mS.substr(start, mPos - start).c_str(), nullptr);  // correctly rounded (glibc)
    }

    static void utf8(std::string& out, uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    uint32_t hex4() {
        if (mPos + 4 > mS.size()) fail("short \\u escape");
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            char h = mS[mPos++];
            v <<= 4;
            if (h >= '0' && h <= '9') v |= static_cast<uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f') v |= static_cast<uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') v |= static_cast<uint32_t>(h - 'A' + 10);
            else fail("bad \\u escape");
        }
        return v;
    }

    std::string str() {
        ++mPos;  // opening quote
        std::string out;
        while (true) {
            if (mPos >= mS.size()) fail("unterminated string");
            char c = mS[mPos++];
            if (c == '"') break;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (mPos >= mS.size()) fail("unterminated escape");
            char e = mS[mPos++];
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                uint32_t cp = hex4();
                if (cp >= 0xD800 && cp < 0xDC00) {  // surrogate pair
                    if (!literal("\\u")) fail("lone high surrogate");
                    uint32_t lo = hex4();
                    if (lo < 0xDC00 || lo >= 0xE000) fail("bad low surrogate");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                utf8(out, cp);
                break;
            }
            default: fail(std::string("bad escape \\") + e);
            }
        }
        return out;
    }

    std::string const& mS;
    size_t mPos{0};
};

Json Json::parse(std::string const& text) { return JsonParser(text).document(); }

namespace {
[[noreturn]] void typeError(std::string const& what, std::string const& want, Json::Type got) {
    throw JsonError(what + " must be " + want + ", not " + typeName(got));
}
}  // namespace

double Json::number(std::string const& what) const {
    if (mType != Type::kNumber) typeError(what, "a number", mType);
    return mNumber;
}
int64_t Json::integer(std::string const& what) const {
    double v = number(what);
    if (std::floor(v) != v || std::fabs(v) > 9.007199254740992e15) throw JsonError(what + " must be an integer");
    return static_cast<int64_t>(v);
}
std::string const& Json::string(std::string const& what) const {
    if (mType != Type::kString) typeError(what, "a string", mType);
    return mString;
}
bool Json::boolean(std::string const& what) const {
    if (mType != Type::kBool) typeError(what, "a boolean", mType);
    return mBool;
}
std::vector<Json> const& Json::array(std::string const& what) const {
    if (mType != Type::kArray) typeError(what, "an array", mType);
    return mArray;
}
std::map<std::string, Json> const& Json::object(std::string const& what) const {
    if (mType != Type::kObject) typeError(what, "an object", mType);
    return mObject;
}
bool Json::has(std::string const& key) const { return mType == Type::kObject && mObject.count(key) != 0; }
Json const& Json::at(std::string const& key, std::string const& what) const {
    auto const& o = object(what);
    auto it = o.find(key);
    if (it == o.end()) throw JsonError(what + " has no \"" + key + "\"");
    return it->second;
}

}  // namespace adatsq
