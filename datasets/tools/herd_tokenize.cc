// herd-tokenize: encodes and decodes with a model directory's tokenizer, one JSON object a line,
// so that tests can compare Herd's tokenizers with the reference ones without the templates of
// herd-prepare (tests/python/bpe_parity.py). Input lines are {"text": "..."} (encoded without
// BOS/EOS, then decoded again) or {"ids": [...]} (decoded); output lines are
// {"ids": [...], "decoded": "..."} or {"text": "..."}, or {"error": "..."}.
#include <fstream>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "datasets/sentencepiece_tokenizer.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

nlohmann::ordered_json Process(const nlohmann::json& in, const Tokenizer& tokenizer) {
  nlohmann::ordered_json out;
  if (in.contains("text")) {
    absl::StatusOr<std::vector<int32_t>> ids =
        tokenizer.Encode(in["text"].get<std::string>(), TextStart::kDocument);
    if (!ids.ok()) return {{"error", std::string(ids.status().message())}};
    out["ids"] = *ids;
    absl::StatusOr<std::string> text = tokenizer.Decode(*ids);
    if (!text.ok()) return {{"error", std::string(text.status().message())}};
    out["decoded"] = *text;
    return out;
  }
  absl::StatusOr<std::string> text = tokenizer.Decode(in["ids"].get<std::vector<int32_t>>());
  if (!text.ok()) return {{"error", std::string(text.status().message())}};
  out["text"] = *text;
  return out;
}

int Main(int argc, char** argv) {
  CLI::App app{"herd-tokenize: encode/decode JSONL lines with a model directory's tokenizer."};
  std::string model, in_path, out_path;
  app.add_option("--model", model, "Model directory")->required()->check(CLI::ExistingDirectory);
  app.add_option("--in", in_path, "JSONL of {\"text\"} or {\"ids\"}")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--out", out_path, "JSONL results")->required();
  CLI11_PARSE(app, argc, argv);

  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(model);
  if (!tokenizer.ok()) {
    std::cerr << "herd-tokenize: " << tokenizer.status().message() << "\n";
    return 2;
  }
  std::ifstream in(in_path);
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool text = j.is_object() && j.contains("text") && j["text"].is_string();
    const bool ids = j.is_object() && j.contains("ids") && j["ids"].is_array();
    if (j.is_discarded() || !(text || ids)) {
      std::cerr << "herd-tokenize: line " << n << ": not {\"text\": ...} or {\"ids\": [...]}\n";
      return 2;
    }
    out << Process(j, **tokenizer).dump() << "\n";
  }
  out.close();
  if (!out) return std::cerr << "herd-tokenize: writing " << out_path << "\n", 1;
  return 0;
}

}  // namespace
}  // namespace herd::datasets

int main(int argc, char** argv) { return herd::datasets::Main(argc, argv); }
