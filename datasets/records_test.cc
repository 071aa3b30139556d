// Record parsing and file validation: every format, every problem path, and the shipped samples.
#include "datasets/records.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

struct Good {
  const char* line;
  RecordFormat format;
};

TEST(RecordsTest, ParsesEveryFormat) {
  const Good kGood[] = {
      {R"({"text": "hello"})", RecordFormat::kText},
      {R"({"prompt": "Q?", "completion": " A."})", RecordFormat::kPromptCompletion},
      {R"({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey", "weight": 1}]})",
       RecordFormat::kChat},
      {R"({"instruction": "Sum", "input": "1 2", "output": "3"})", RecordFormat::kAlpaca},
      {R"({"instruction": "Say hi", "output": "hi"})", RecordFormat::kAlpaca},
      {R"({"input_ids": [1, 2, 3], "labels": [-100, 2, 3]})", RecordFormat::kTokenized},
      {R"({"text": "extra keys are kept out of the way", "id": 7})", RecordFormat::kText},
  };
  for (const Good& g : kGood) {
    Problem p;
    auto r = ParseRecord(g.line, &p);
    ASSERT_TRUE(r.has_value()) << g.line << ": " << p.field << " " << p.reason;
    EXPECT_EQ(r->format, g.format) << g.line;
  }
}

struct Bad {
  const char* line;
  const char* field;
  const char* reason;  // substring
};

TEST(RecordsTest, ProblemsNameFieldAndReason) {
  const Bad kBad[] = {
      {R"({"text": "unterminated)", "", "not valid JSON"},
      {R"([1, 2])", "", "must be a JSON object"},
      {R"({"foo": 1})", "", "no known format"},
      {R"({"text": "a", "messages": []})", "", "mixes formats"},
      {R"({"text": 3})", "text", "must be a string"},
      {R"({"text": ""})", "text", "must not be empty"},
      {R"({"prompt": "q"})", "completion", "missing"},
      {R"({"messages": "hi"})", "messages", "must be an array"},
      {R"({"messages": []})", "messages", "must not be empty"},
      {R"({"messages": [{"role": "bot", "content": "x"}]})", "messages[0].role", "got 'bot'"},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content", "missing"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", "messages", "no assistant message"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]})",
       "messages[1].role", "only come first"},
      {R"({"messages": [{"role": "assistant", "content": "x", "weight": 2}]})", "messages[0].weight", "0 or 1"},
      {R"({"messages": [{"role": "assistant", "content": "x", "name": "n"}]})", "messages[0].name", "unknown field"},
      {R"({"input_ids": [1, "2"]})", "input_ids[1]", "must be an integer"},
      {R"({"input_ids": [1, 2], "labels": [1]})", "labels", "has 1 entries"},
      {R"({"instruction": "i", "output": 5})", "output", "must be a string"},
      {R"({"text": [[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]})", "", "nested deeper"},
  };
  for (const Bad& b : kBad) {
    Problem p;
    auto r = ParseRecord(b.line, &p);
    ASSERT_FALSE(r.has_value()) << b.line;
    EXPECT_EQ(p.field, b.field) << b.line;
    EXPECT_NE(p.reason.find(b.reason), std::string::npos) << b.line << " gave: " << p.reason;
  }
}

TEST(RecordsTest, FileRejectedWholeUnlessSkipInvalid) {
  std::string file =
      "{\"text\": \"one\"}\n"
      "\n"
      "{\"text\": \n"
      "{\"prompt\": \"p\", \"completion\": \"c\"}\n"
      "{\"text\": \"two\"}\r\n";
  {
    std::istringstream in(file);
    ValidationOptions opts;
    ValidationReport report = ValidateJsonl(in, opts);
    EXPECT_FALSE(report.ok(opts));
    EXPECT_EQ(report.accepted, 2);
    EXPECT_EQ(report.invalid, 2);
    EXPECT_EQ(report.blank_lines, 1);
    ASSERT_EQ(report.problems.size(), 2u);
    EXPECT_EQ(DescribeProblem(report.problems[0]), "line 3: not valid JSON");
    EXPECT_EQ(DescribeProblem(report.problems[1]), "line 4: is prompt_completion but the file is text");
  }
  {
    std::istringstream in(file);
    ValidationOptions opts{.skip_invalid = true};
    std::vector<Record> records;
    ValidationReport report = ValidateJsonl(in, opts, &records);
    EXPECT_TRUE(report.ok(opts));
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[1].text, "two");
  }
}

TEST(RecordsTest, ListsOnlyTheFirstProblemsButCountsAll) {
  std::string file;
  for (int i = 0; i < 50; ++i) file += "{}\n";
  std::istringstream in(file);
  ValidationOptions opts;
  ValidationReport report = ValidateJsonl(in, opts);
  EXPECT_EQ(report.invalid, 50);
  EXPECT_EQ(report.problems.size(), 20u);
  EXPECT_EQ(report.problems.back().line, 20);
}

TEST(RecordsTest, LimitsLineLength) {
  std::istringstream in("{\"text\": \"" + std::string(100, 'x') + "\"}\n");
  ValidationOptions opts{.max_line_bytes = 64};
  ValidationReport report = ValidateJsonl(in, opts);
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_NE(report.problems[0].reason.find("the limit is 64"), std::string::npos);
}

TEST(RecordsTest, StopsAtTheRecordLimit) {
  std::istringstream in("{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n{}\n{\"text\": \"c\"}\n{oops\n");
  ValidationOptions opts{.skip_invalid = true, .max_records = 2};
  std::vector<Record> records;
  ValidationReport report = ValidateJsonl(in, opts, &records);
  EXPECT_EQ(report.accepted, 2);
  EXPECT_EQ(report.invalid, 1);  // the third record is the problem; the rest is not read
  ASSERT_EQ(report.problems.size(), 1u);
  EXPECT_EQ(DescribeProblem(report.problems[0]), "line 4: more than 2 records");
  EXPECT_EQ(records.size(), 2u);
}

TEST(RecordsTest, ShippedSamplesAreValid) {
  const char* src = std::getenv("HERD_SOURCE_DIR");
  ASSERT_NE(src, nullptr) << "HERD_SOURCE_DIR must point at the checkout";
  struct Sample {
    const char* path;
    RecordFormat format;
  };
  for (const Sample& s : {Sample{"datasets/samples/support_chat.jsonl", RecordFormat::kChat},
                          Sample{"datasets/samples/support_qa.jsonl", RecordFormat::kPromptCompletion}}) {
    std::ifstream in(std::string(src) + "/" + s.path);
    ASSERT_TRUE(in) << s.path;
    ValidationOptions opts;
    ValidationReport report = ValidateJsonl(in, opts);
    EXPECT_TRUE(report.ok(opts)) << s.path << ": "
                                 << (report.problems.empty() ? "" : DescribeProblem(report.problems[0]));
    EXPECT_EQ(report.format, s.format) << s.path;
    EXPECT_GE(report.accepted, 300) << s.path;
  }
}

}  // namespace
}  // namespace herd::datasets

namespace herd::datasets {
namespace {

// A line nested a million deep is refused before it is parsed (parsing and destroying a value
// that deep would exhaust the stack); brackets inside strings do not count.
TEST(RecordsTest, DeepNestingIsRefusedWithoutParsing) {
  const std::string deep = R"({"text": )" + std::string(1'000'000, '[') + std::string(1'000'000, ']') + "}";
  Problem problem;
  EXPECT_FALSE(ParseRecord(deep, &problem).has_value());
  EXPECT_NE(problem.reason.find("nested deeper"), std::string::npos) << problem.reason;
  auto ok = ParseRecord(R"({"text": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{{{{{{\"]]"})", &problem);
  ASSERT_TRUE(ok.has_value()) << problem.reason;
}

}  // namespace
}  // namespace herd::datasets
