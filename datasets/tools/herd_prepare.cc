// herd-prepare: prepares a JSONL dataset for training with a model directory's tokenizer
// (validate, tokenise, template, mask, split, pack, write the prepared files) and prints the
// figures as JSON. It is the process that links libsentencepiece, which cannot share a process
// with gRPC/protobuf (coordinator) or libtorch (engine); they run it as a child. --dump-examples
// writes each record's ids and mask instead (tests/python/tokenizer_parity.py reads it); with
// --limit and --pieces it is what `herd datasets inspect` shows (one JSON object a line: line,
// format, chat_template?, length, ids, trained, pieces?, text? or error).
#include <fstream>
#include <iostream>
#include <optional>
#include <string_view>

#include "CLI/CLI.hpp"
#include "common/status.h"
#include "common/strings.h"
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

// The first `limit` records of a JSONL file in order, without reading the rest (--limit): an
// invalid record among them is INVALID_ARGUMENT unless skip_invalid, which skips it.
absl::StatusOr<std::vector<NumberedRecord>> ReadFirstRecords(const std::string& path,
                                                             const ValidationOptions& options,
                                                             int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(herd::StrCat("cannot open ", path));
  std::optional<RecordFormat> format = options.format;
  std::vector<NumberedRecord> out;
  std::string line;
  for (int64_t number = 1; static_cast<int64_t>(out.size()) < limit && std::getline(in, line);
       ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    Problem p;
    std::optional<Record> r;
    if (line.size() > options.max_line_bytes) {
      p.reason = herd::StrCat("line is ", line.size(), " bytes, the limit is ",
                              options.max_line_bytes);
    } else {
      r = ParseRecord(line, &p);
    }
    if (r && format && r->format != *format) {
      p.reason = herd::StrCat("is ", FormatName(r->format), " but the file is ",
                              FormatName(*format));
      r.reset();
    }
    if (!r) {
      if (options.skip_invalid) continue;
      p.line = number;
      return absl::InvalidArgumentError(herd::StrCat(path, ": ", DescribeProblem(p)));
    }
    if (!format) format = r->format;
    out.push_back({number, *std::move(r)});
  }
  if (out.empty()) return absl::InvalidArgumentError(herd::StrCat(path, ": no records"));
  return out;
}

// Token bytes for JSON, which must be UTF-8: valid sequences as they are, any other byte as
// "<0xNN>" (a character split over byte tokens shows as its bytes, one token each).
std::string DisplayBytes(std::string_view b) {
  std::string out;
  for (size_t i = 0; i < b.size();) {
    const auto c = static_cast<unsigned char>(b[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n > 0 && i + n <= b.size() && !(n == 2 && c < 0xC2) && !(c > 0xF4);
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(b[i + k]) & 0xC0) == 0x80;
    if (ok) {
      out.append(b.substr(i, n));
      i += n;
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      out += "<0x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
      out += '>';
      ++i;
    }
  }
  return out;
}

// Options of --dump-examples beyond PrepareOptions.
struct DumpOptions {
  int64_t limit = 0;        // records to dump; 0 = all (and the whole file must validate)
  int64_t max_seq_len = 0;  // > 0: cut each example to this many tokens, as packing would
  bool pieces = false;      // write each token's text ("pieces")
};

absl::Status DumpExamples(const std::string& data, const Tokenizer& tokenizer,
                          const PrepareOptions& options, const DumpOptions& dump,
                          const std::string& out_path) {
  ValidationOptions vopts;
  vopts.format = options.format;
  vopts.skip_invalid = options.skip_invalid;
  std::vector<NumberedRecord> records;
  if (dump.limit > 0) {
    HERD_ASSIGN_OR_RETURN(records, ReadFirstRecords(data, vopts, dump.limit));
  } else {
    HERD_ASSIGN_OR_RETURN(records, ReadJsonlRecords(data, vopts, nullptr));
  }
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
    nlohmann::ordered_json j = {{"line", nr.line},
                                {"format", std::string(FormatName(nr.record.format))}};
    if (nr.record.format == RecordFormat::kChat) {
      j["chat_template"] = std::string(ChatTemplateName(eopts.chat_template));
    }
    absl::StatusOr<Example> ex = BuildExample(nr.record, tokenizer, eopts);
    if (ex.ok()) {
      j["length"] = ex->ids.size();
      if (dump.max_seq_len > 0 && static_cast<int64_t>(ex->ids.size()) > dump.max_seq_len) {
        ex->ids.resize(dump.max_seq_len);
        ex->trained.resize(dump.max_seq_len);
      }
      j["ids"] = ex->ids;
      j["trained"] = ex->trained;
      if (dump.pieces) {
        std::vector<std::string> pieces;
        pieces.reserve(ex->ids.size());
        for (int32_t id : ex->ids) {
          HERD_ASSIGN_OR_RETURN(std::string bytes, tokenizer.TokenBytes(id));
          pieces.push_back(DisplayBytes(bytes));
        }
        j["pieces"] = pieces;
      }
    } else {
      j["error"] = std::string(ex.status().message());
    }
    if (nr.record.format == RecordFormat::kChat) {
      absl::StatusOr<std::string> text =
          RenderChat(nr.record.messages, eopts.chat_template, bos, eos);
      if (text.ok()) j["text"] = *text;
    }
    out << j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
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
  app.add_option("--threads", o.threads, "Tokenising threads (0: one per core, at most 8)")
      ->capture_default_str();
  app.add_option("--dump-examples", dump, "Write each record's ids and mask as JSONL here instead");
  DumpOptions dump_options;
  app.add_option("--limit", dump_options.limit,
                 "With --dump-examples: only the first N records (the rest is not read)")
      ->check(CLI::PositiveNumber);
  app.add_flag("--pieces", dump_options.pieces,
               "With --dump-examples: also each token's text (\"pieces\")");
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
    // An explicit --max-seq-len cuts the dumped examples as packing would; by default they are whole.
    if (app.count("--max-seq-len") > 0) dump_options.max_seq_len = o.packing.max_seq_len;
    absl::Status s = DumpExamples(data, **tokenizer, o, dump_options, dump);
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
