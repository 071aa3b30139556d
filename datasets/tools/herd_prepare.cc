// herd-prepare: prepares a JSONL dataset for training with a model directory's tokenizer
// (validate, tokenise, template, mask, split, pack, write the prepared files) and prints the
// figures as JSON. It is the process that links libsentencepiece, which cannot share a process
// with gRPC/protobuf (coordinator) or libtorch (engine); they run it as a child. --dump-examples
// writes each record's ids and mask instead (tests/python/tokenizer_parity.py reads it).
#include <fstream>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common/status.h"
#include "datasets/examples.h"
#include "datasets/prepare.h"
#include "datasets/sentencepiece_tokenizer.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

// The CLI's exit codes (DESIGN.md §11).
int ExitCode(const absl::Status& s) {
  if (absl::IsInvalidArgument(s) || absl::IsFailedPrecondition(s) || absl::IsUnimplemented(s)) {
    return 2;
  }
  if (absl::IsNotFound(s)) return 3;
  return 1;
}

absl::Status DumpExamples(const std::string& data, const Tokenizer& tokenizer,
                          const PrepareOptions& options, const std::string& out_path) {
  ValidationOptions vopts;
  vopts.format = options.format;
  HERD_ASSIGN_OR_RETURN(std::vector<NumberedRecord> records,
                        ReadJsonlRecords(data, vopts, nullptr));
  ExampleOptions eopts = options.examples;
  if (eopts.chat_template == ChatTemplate::kAuto && !records.empty() &&
      records[0].record.format == RecordFormat::kChat) {
    HERD_ASSIGN_OR_RETURN(eopts.chat_template, DetectChatTemplate(tokenizer.info().chat_template));
  }
  // How the template text spells BOS/EOS: the BPE tokenizer's special token, else SentencePiece's.
  std::string bos = "<s>", eos = "</s>";
  for (const auto& [content, id] : tokenizer.info().special_tokens) {
    if (id == tokenizer.bos_id()) bos = content;
    if (id == tokenizer.eos_id()) eos = content;
  }
  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  for (const NumberedRecord& nr : records) {
    nlohmann::ordered_json j = {{"line", nr.line}};
    absl::StatusOr<Example> ex = BuildExample(nr.record, tokenizer, eopts);
    if (ex.ok()) {
      j["ids"] = ex->ids;
      j["trained"] = ex->trained;
    } else {
      j["error"] = std::string(ex.status().message());
    }
    if (nr.record.format == RecordFormat::kChat) {
      absl::StatusOr<std::string> text =
          RenderChat(nr.record.messages, eopts.chat_template, bos, eos);
      if (text.ok()) j["text"] = *text;
    }
    out << j.dump() << "\n";
  }
  out.close();
  if (!out) return absl::InternalError("writing " + out_path);
  return absl::OkStatus();
}

int Main(int argc, char** argv) {
  CLI::App app{
      "herd-prepare: tokenise, template, mask, split and pack a JSONL dataset into "
      "prepared-data files (datasets/PREPARED_FORMAT.md)."};
  std::string data, model, format = "auto", chat_template = "auto", overflow = "truncate", dump;
  bool no_packing = false;
  PrepareOptions o;
  app.add_option("--data", data, "JSONL dataset")->required()->check(CLI::ExistingFile);
  app.add_option("--model", model,
                 "Model directory with tokenizer.model or tokenizer.json (+ tokenizer_config.json)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--out", o.output_path, "Prepared training rows (.safetensors)");
  app.add_option("--validation-out", o.validation_output_path, "Prepared validation rows");
  app.add_option("--validation-split", o.validation_split, "Fraction of records held out")
      ->capture_default_str();
  app.add_option("--format", format, "text|prompt_completion|chat|alpaca|tokenized|auto")
      ->capture_default_str();
  app.add_option("--chat-template", chat_template, "llama2|llama3|auto")->capture_default_str();
  app.add_flag("--train-on-inputs", o.examples.train_on_inputs,
               "Train on prompts and user turns too");
  app.add_option("--max-seq-len", o.packing.max_seq_len, "Tokens per row")->capture_default_str();
  app.add_flag("--no-packing", no_packing, "One document per row");
  app.add_option("--overflow", overflow, "truncate|drop documents over --max-seq-len")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "Seed of the validation split and the order")
      ->capture_default_str();
  app.add_flag("--skip-invalid", o.skip_invalid, "Drop invalid records instead of failing");
  app.add_option("--dump-examples", dump, "Write each record's ids and mask as JSONL here instead");
  CLI11_PARSE(app, argc, argv);

  o.packing.packing = !no_packing;
  if (format != "auto") {
    o.format = ParseFormatName(format);
    if (!o.format) return std::cerr << "herd-prepare: unknown --format " << format << "\n", 1;
  }
  std::optional<ChatTemplate> t = ParseChatTemplateName(chat_template);
  std::optional<Overflow> ov = ParseOverflowName(overflow);
  if (!t) return std::cerr << "herd-prepare: unknown --chat-template " << chat_template << "\n", 1;
  if (!ov) return std::cerr << "herd-prepare: unknown --overflow " << overflow << "\n", 1;
  o.examples.chat_template = *t;
  o.packing.overflow = *ov;

  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(model);
  if (!tokenizer.ok()) {
    std::cerr << "herd-prepare: " << tokenizer.status().message() << "\n";
    return ExitCode(tokenizer.status());
  }
  if (!dump.empty()) {
    absl::Status s = DumpExamples(data, **tokenizer, o, dump);
    if (!s.ok()) std::cerr << "herd-prepare: " << s.message() << "\n";
    return s.ok() ? 0 : ExitCode(s);
  }
  absl::StatusOr<PrepareResult> result = PrepareJsonl(data, **tokenizer, o);
  if (!result.ok()) {
    std::cerr << "herd-prepare: " << result.status().message() << "\n";
    return ExitCode(result.status());
  }
  std::cout << result->ToJson() << "\n";
  return 0;
}

}  // namespace
}  // namespace herd::datasets

int main(int argc, char** argv) { return herd::datasets::Main(argc, argv); }
