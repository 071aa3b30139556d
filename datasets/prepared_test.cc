// The prepared-data file: round trip, structural rejections naming the problem, content checks.
// Links herd_prepared alone, which is what the engine links.
#include "datasets/prepared.h"

#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "gtest/gtest.h"

namespace herd::datasets {
namespace {

#define EXPECT_CONTAINS(text, sub)                          \
  EXPECT_NE(std::string(text).find(sub), std::string::npos) \
      << "expected \"" << (sub) << "\" in: " << (text)

constexpr int32_t X = kIgnoreTarget;
constexpr int32_t P = kPadDocId;

class PreparedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/herd_prepared_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Two rows of 4: [5 6 7 | 8] and [9 10 pad pad].
  static PreparedRows Rows() {
    PreparedRows r;
    r.seq_len = 4;
    r.rows = 2;
    r.input_ids = {5, 6, 7, 8, 9, 10, 0, 0};
    r.targets = {6, 7, X, X, 10, X, X, X};
    r.position_ids = {0, 1, 2, 0, 0, 1, 0, 0};
    r.doc_ids = {0, 0, 0, 1, 0, 0, P, P};
    return r;
  }
  static PreparedMetadata Meta() {
    PreparedMetadata m;
    m.split = "train";
    m.vocab_size = 32;
    m.stats_json = "{\"sequences\":2}";
    m.tokenizer_sha256 = "aa";
    m.tokenizer_config_sha256 = "bb";
    m.source_sha256 = "cc";
    m.options_json = "{\"seed\":1}";
    return m;
  }

  std::string dir_;
};

TEST_F(PreparedTest, RoundTrip) {
  ASSERT_TRUE(WritePreparedFile(Path("a.safetensors"), Rows(), Meta()).ok());
  absl::StatusOr<std::unique_ptr<PreparedFile>> f = PreparedFile::Open(Path("a.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->rows(), 2);
  EXPECT_EQ((*f)->seq_len(), 4);
  const PreparedMetadata& m = (*f)->metadata();
  EXPECT_EQ(m.split, "train");
  EXPECT_EQ(m.vocab_size, 32);
  EXPECT_EQ(m.stats_json, "{\"sequences\":2}");
  EXPECT_EQ(m.tokenizer_sha256, "aa");
  EXPECT_EQ(m.tokenizer_config_sha256, "bb");
  EXPECT_EQ(m.source_sha256, "cc");
  EXPECT_EQ(m.options_json, "{\"seed\":1}");
  PreparedFile::Row row = (*f)->row(1);
  EXPECT_EQ(std::vector<int32_t>(row.input_ids.begin(), row.input_ids.end()),
            (std::vector<int32_t>{9, 10, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(row.targets.begin(), row.targets.end()),
            (std::vector<int32_t>{10, X, X, X}));
  EXPECT_EQ(std::vector<int32_t>(row.position_ids.begin(), row.position_ids.end()),
            (std::vector<int32_t>{0, 1, 0, 0}));
  EXPECT_EQ(std::vector<int32_t>(row.doc_ids.begin(), row.doc_ids.end()),
            (std::vector<int32_t>{0, 0, P, P}));
  EXPECT_TRUE((*f)->Verify().ok()) << (*f)->Verify();
}

TEST_F(PreparedTest, ZeroRows) {
  PreparedRows empty;
  empty.seq_len = 8;
  ASSERT_TRUE(WritePreparedFile(Path("e.safetensors"), empty, Meta()).ok());
  absl::StatusOr<std::unique_ptr<PreparedFile>> f = PreparedFile::Open(Path("e.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->rows(), 0);
  EXPECT_TRUE((*f)->Verify().ok());
}

TEST_F(PreparedTest, WriterRefusesWrongSizes) {
  PreparedRows r = Rows();
  r.targets.pop_back();
  absl::Status s = WritePreparedFile(Path("w.safetensors"), r, Meta());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "targets holds 7 values");
  EXPECT_FALSE(std::filesystem::exists(Path("w.safetensors")));
}

// Files that are valid safetensors but not valid prepared data.
TEST_F(PreparedTest, StructuralRejections) {
  const auto i32 = [](const std::vector<int32_t>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  };
  const PreparedRows rows = Rows();
  // Writes the good file's tensors and metadata after `edit` has had its way with them.
  using Edit =
      std::function<void(std::map<std::string, std::string> & meta,
                         std::map<std::string, std::pair<Dtype, std::vector<int64_t>>> & shape,
                         std::map<std::string, std::string> & data)>;
  struct Case {
    std::string name;
    Edit edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no marker", [](auto& m, auto&, auto&) { m.erase("herd_prepared"); },
       "not a prepared-data file"},
      {"future version", [](auto& m, auto&, auto&) { m["herd_prepared"] = "2"; },
       "format version 2 is not supported"},
      {"bad seq_len", [](auto& m, auto&, auto&) { m["seq_len"] = "four"; }, "seq_len 'four'"},
      {"seq_len disagrees with the shape", [](auto& m, auto&, auto&) { m["seq_len"] = "2"; },
       "tensor"},
      {"missing tensor",
       [](auto&, auto& s, auto& d) {
         s.erase("targets");
         d.erase("targets");
       },
       "targets"},
      {"wrong dtype",
       [&](auto&, auto& s, auto& d) {
         s["doc_ids"].first = Dtype::kI16;
         d["doc_ids"] = d["doc_ids"].substr(0, 16);
       },
       "doc_ids must be I32"},
      {"rows disagree",
       [&](auto&, auto& s, auto& d) {
         s["position_ids"].second = {1, 4};
         d["position_ids"] = d["position_ids"].substr(0, 16);
       },
       "position_ids must be I32 [rows, 4]"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::map<std::string, std::string> meta = {
        {"herd_prepared", "1"}, {"seq_len", "4"}, {"vocab_size", "32"}};
    std::map<std::string, std::pair<Dtype, std::vector<int64_t>>> shape;
    std::map<std::string, std::string> data = {{"input_ids", i32(rows.input_ids)},
                                               {"targets", i32(rows.targets)},
                                               {"position_ids", i32(rows.position_ids)},
                                               {"doc_ids", i32(rows.doc_ids)}};
    for (const auto& [name, bytes] : data) shape[name] = {Dtype::kI32, {2, 4}};
    c.edit(meta, shape, data);
    SafetensorsWriter w;
    for (const auto& [name, bytes] : data) {
      ASSERT_TRUE(w.Add(name, shape[name].first, shape[name].second, bytes).ok());
    }
    for (const auto& [k, v] : meta) w.SetMetadata(k, v);
    ASSERT_TRUE(w.Write(Path("bad.safetensors")).ok());
    absl::StatusOr<std::unique_ptr<PreparedFile>> f = PreparedFile::Open(Path("bad.safetensors"));
    ASSERT_FALSE(f.ok());
    EXPECT_CONTAINS(f.status().message(), c.message);
    EXPECT_CONTAINS(f.status().message(), "bad.safetensors");
  }
  EXPECT_EQ(PreparedFile::Open(Path("missing.safetensors")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PreparedTest, VerifyFindsBadContents) {
  struct Case {
    std::string name;
    std::function<void(PreparedRows&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"target is not the next id", [](PreparedRows& r) { r.targets[0] = 9; },
       "row 0, column 0: target 9"},
      {"target across documents", [](PreparedRows& r) { r.targets[2] = 8; }, "row 0, column 2"},
      {"position does not continue", [](PreparedRows& r) { r.position_ids[2] = 5; },
       "row 0, column 2: position 5"},
      {"document index skips", [](PreparedRows& r) { r.doc_ids[3] = 2; }, "document index 2"},
      {"padding in the middle",
       [](PreparedRows& r) {
         r.doc_ids[4] = P;
         r.targets[4] = X;
       },
       "row 1, column 0: padding before a document"},
      {"padding with a target", [](PreparedRows& r) { r.targets[7] = 0; }, "padding slot"},
      {"id outside the vocabulary", [](PreparedRows& r) { r.input_ids[6] = 99; },
       "row 1, column 2: input id 99"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    PreparedRows r = Rows();
    c.edit(r);
    absl::Status in_memory = VerifyRows(r, 32);
    EXPECT_FALSE(in_memory.ok());
    EXPECT_CONTAINS(in_memory.message(), c.message);
    ASSERT_TRUE(WritePreparedFile(Path("v.safetensors"), r, Meta()).ok());
    absl::StatusOr<std::unique_ptr<PreparedFile>> f = PreparedFile::Open(Path("v.safetensors"));
    ASSERT_TRUE(f.ok()) << f.status();
    absl::Status on_disk = (*f)->Verify();
    EXPECT_FALSE(on_disk.ok());
    EXPECT_CONTAINS(on_disk.message(), c.message);
  }
}

// The streaming writer's bytes are SafetensorsWriter's (the layout every other Herd safetensors
// file has), whether the rows come at once or a few at a time; metadata with non-UTF-8 bytes too.
TEST_F(PreparedTest, StreamingWriterHasSafetensorsWriterBytes) {
  const auto i32 = [](const std::vector<int32_t>& v) {
    return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  };
  for (const std::string& stats : {std::string("{\"sequences\":2}"), std::string("caf\xe9 \xff")}) {
    PreparedMetadata meta = Meta();
    meta.stats_json = stats;
    const PreparedRows rows = Rows();
    SafetensorsWriter reference;
    ASSERT_TRUE(reference.Add("input_ids", Dtype::kI32, {2, 4}, i32(rows.input_ids)).ok());
    ASSERT_TRUE(reference.Add("targets", Dtype::kI32, {2, 4}, i32(rows.targets)).ok());
    ASSERT_TRUE(reference.Add("position_ids", Dtype::kI32, {2, 4}, i32(rows.position_ids)).ok());
    ASSERT_TRUE(reference.Add("doc_ids", Dtype::kI32, {2, 4}, i32(rows.doc_ids)).ok());
    for (const auto& [k, v] : std::map<std::string, std::string>{
             {"herd_prepared", "1"},
             {"seq_len", "4"},
             {"split", meta.split},
             {"vocab_size", "32"},
             {"stats", meta.stats_json},
             {"tokenizer_sha256", meta.tokenizer_sha256},
             {"tokenizer_config_sha256", meta.tokenizer_config_sha256},
             {"source_sha256", meta.source_sha256},
             {"options", meta.options_json}}) {
      reference.SetMetadata(k, v);
    }
    ASSERT_TRUE(WritePreparedFile(Path("whole.safetensors"), rows, meta).ok());
    EXPECT_TRUE(ReadFile(Path("whole.safetensors")).value() == reference.Serialize());

    auto writer = PreparedFileWriter::Create(Path("parts.safetensors"), 2, 4, meta);
    ASSERT_TRUE(writer.ok()) << writer.status();
    for (int r : {1, 0}) {
      PreparedRows one;
      one.seq_len = 4;
      one.rows = 1;
      const auto row = [&](const std::vector<int32_t>& v) {
        return std::vector<int32_t>(v.begin() + 4 * r, v.begin() + 4 * r + 4);
      };
      one.input_ids = row(rows.input_ids);
      one.targets = row(rows.targets);
      one.position_ids = row(rows.position_ids);
      one.doc_ids = row(rows.doc_ids);
      ASSERT_TRUE((*writer)->Write(r, one).ok());  // rows in any order
    }
    ASSERT_TRUE((*writer)->Finish().ok());
    EXPECT_TRUE(ReadFile(Path("parts.safetensors")).value() == reference.Serialize());
  }
}

TEST_F(PreparedTest, StreamingWriterChecksRowsAndLeavesNothingUnfinished) {
  {
    auto writer = PreparedFileWriter::Create(Path("s.safetensors"), 3, 4, Meta());
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(0, Rows()).ok());
    PreparedRows wrong = Rows();
    wrong.seq_len = 8;
    wrong.rows = 1;
    EXPECT_CONTAINS((*writer)->Write(2, wrong).message(), "rows of 8 written");
    EXPECT_CONTAINS((*writer)->Write(2, Rows()).message(), "rows [2, 4) are outside the file's 3");
    EXPECT_EQ((*writer)->Finish().code(), absl::StatusCode::kFailedPrecondition);
  }
  {
    auto writer = PreparedFileWriter::Create(Path("s.safetensors"), 2, 4, Meta());
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Write(0, Rows()).ok());
  }  // abandoned
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    ADD_FAILURE() << "left behind: " << entry.path();
  }
}

}  // namespace
}  // namespace herd::datasets
