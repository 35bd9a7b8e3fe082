// The JSON reader: values, escapes, the errors it reports.
#include "adatsq/json.h"

#include "check.h"

using adatsq::Json;

int main() {
    Json j = Json::parse(R"( {"a": [1, -2.5e1, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} )");
    CHECK(j.isObject());
    auto const& a = j.at("a", "doc").array("a");
    CHECK(a.size() == 5);
    CHECK(a[0].integer("a0") == 1);
    CHECK(a[1].number("a1") == -25.0);
    CHECK(a[2].boolean("a2") && !a[3].boolean("a3") && a[4].isNull());
    CHECK(j.at("s", "doc").string("s") == "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(j.at("o", "doc").object("o").empty());
    CHECK(j.keyOrder().size() == 3 && j.keyOrder()[0] == "a" && j.keyOrder()[2] == "o");
    CHECK(Json::parse("917.844177").number("t") == 917.844177);
    CHECK_THROWS_WITH(Json::parse("{\"a\": 1} x"), "trailing characters");
    CHECK_THROWS_WITH(Json::parse("{\"a\": 1, \"a\": 2}"), "duplicate key \"a\"");
    CHECK_THROWS_WITH(Json::parse("[1, 2"), "unexpected end");
    CHECK_THROWS_WITH(Json::parse("\"abc"), "unterminated string");
    CHECK_THROWS_WITH(Json::parse("[01x]"), "expected ',' or ']'");
    CHECK_THROWS_WITH(Json::parse("{\"a\": tru}"), "unexpected character 't'");
    CHECK_THROWS_WITH(j.at("a", "doc").integer("doc.a"), "doc.a must be a number, not an array");
    CHECK_THROWS_WITH(Json::parse("1.5").integer("steps"), "steps must be an integer");
    CHECK_THROWS_WITH(j.at("zz", "schedule.json"), "schedule.json has no \"zz\"");
    CHECK_DONE();
}
