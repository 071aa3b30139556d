// LineBatchReader: the lines std::getline would give, in batches of any size; overlong lines
// measured without being kept (also past the reader's block size); the whole file's hash.
#include "datasets/line_reader.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

class LineReaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/herd_line_reader_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& content) {
    const std::string path = dir_ + "/f.jsonl";
    std::ofstream(path, std::ios::binary) << content;
    return path;
  }

  // Every line as "bytes" or "<overlong N>", with its number.
  static std::vector<std::string> ReadAll(const std::string& path, size_t max_line_bytes,
                                          size_t batch_bytes) {
    auto reader = LineBatchReader::Open(path, max_line_bytes, batch_bytes);
    EXPECT_TRUE(reader.ok()) << reader.status();
    std::vector<std::string> out;
    LineBatch batch;
    int64_t expected_number = 1;
    for (;;) {
      absl::StatusOr<bool> more = (*reader)->Next(&batch);
      EXPECT_TRUE(more.ok()) << more.status();
      if (!more.ok() || !*more) break;
      EXPECT_EQ(batch.first_number, expected_number);
      for (size_t i = 0; i < batch.lines.size(); ++i) {
        out.push_back(batch.lines[i].overlong
                          ? "<overlong " + std::to_string(batch.lines[i].size) + ">"
                          : std::string(batch.line(i)));
      }
      expected_number += static_cast<int64_t>(batch.lines.size());
    }
    return out;
  }

  // What ValidateJsonl sees: std::getline, the '\r' measured off for the length limit only.
  static std::vector<std::string> Expected(const std::string& content, size_t max_line_bytes) {
    std::istringstream in(content);
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) {
      const size_t length = line.size() - (line.ends_with('\r') ? 1 : 0);
      out.push_back(length > max_line_bytes ? "<overlong " + std::to_string(length) + ">" : line);
    }
    return out;
  }

  std::string dir_;
};

TEST_F(LineReaderTest, LinesAsGetlineGivesThem) {
  const std::vector<std::string> contents = {
      "",
      "\n",
      "a",
      "a\n",
      "a\nb",
      "\n\n\nx\n\n",
      "{\"text\": \"one\"}\r\n{\"text\": \"two\"}\r\n\r\n",
      "short\n" + std::string(40, 'L') + "\nok\r\n" + std::string(33, 'M') + "\r\n" +
          std::string(32, 'N') + "\r\nend",
  };
  for (const std::string& c : contents) {
    const std::string path = Write(c);
    for (size_t batch_bytes : {1, 3, 64, 1 << 20}) {
      SCOPED_TRACE(testing::Message() << "content " << testing::PrintToString(c) << ", batch "
                                      << batch_bytes);
      EXPECT_EQ(ReadAll(path, 32, batch_bytes), Expected(c, 32));
    }
  }
}

TEST_F(LineReaderTest, OverlongLinesLongerThanABlock) {
  // Lines of several megabytes are skipped as they stream past, never held.
  const std::string big(3 << 20, 'x');
  const std::string content = "a\n" + big + "\r\n" + "b\n" + big + "y" + "\n" + big;
  const std::string path = Write(content);
  EXPECT_EQ(ReadAll(path, 1000, 1 << 10), Expected(content, 1000));
}

TEST_F(LineReaderTest, HashesTheWholeFile) {
  std::string content;
  for (int i = 0; i < 100000; ++i) content += "{\"text\": \"line " + std::to_string(i) + "\"}\n";
  const std::string path = Write(content);
  auto reader = LineBatchReader::Open(path, 1 << 20);
  ASSERT_TRUE(reader.ok());
  LineBatch batch;
  size_t lines = 0;
  while ((*reader)->Next(&batch).value()) lines += batch.lines.size();
  EXPECT_EQ(lines, 100000u);
  EXPECT_EQ((*reader)->Sha256Hex(), Sha256File(path).value());
}

TEST_F(LineReaderTest, MissingFile) {
  EXPECT_EQ(LineBatchReader::Open(dir_ + "/none", 10).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace herd::datasets
