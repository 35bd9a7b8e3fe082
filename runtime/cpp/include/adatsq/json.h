// A small JSON reader (RFC 8259 subset sufficient for the output directory's files: objects, arrays, strings
// with escapes including \uXXXX, numbers, true/false/null). Written for adatsq; no third-party code.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace adatsq {

class JsonError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Json {
public:
    enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

    Json() = default;
    static Json parse(std::string const& text);  // throws JsonError with the byte offset

    Type type() const { return mType; }
    bool isNull() const { return mType == Type::kNull; }
    bool isNumber() const { return mType == Type::kNumber; }
    bool isString() const { return mType == Type::kString; }
    bool isArray() const { return mType == Type::kArray; }
    bool isObject() const { return mType == Type::kObject; }
    bool isBool() const { return mType == Type::kBool; }

    // Typed access; `what` names the value in the error ("schedule.json: steps").
    double number(std::string const& what) const;
    int64_t integer(std::string const& what) const;  // a number with no fractional part
    std::string const& string(std::string const& what) const;
    bool boolean(std::string const& what) const;
    std::vector<Json> const& array(std::string const& what) const;
    std::map<std::string, Json> const& object(std::string const& what) const;

    bool has(std::string const& key) const;
    Json const& at(std::string const& key, std::string const& what) const;  // throws naming `what.key`
    std::vector<std::string> const& keyOrder() const { return mKeys; }

private:
    friend class JsonParser;
    Type mType{Type::kNull};
    bool mBool{false};
    double mNumber{0.0};
    std::string mString;
    std::vector<Json> mArray;
    std::map<std::string, Json> mObject;
    std::vector<std::string> mKeys;  // object keys in file order
};

std::string typeName(Json::Type t);

}  // namespace adatsq
