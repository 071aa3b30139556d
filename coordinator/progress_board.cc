// ProgressBoard: see progress_board.h.
#include "coordinator/progress_board.h"

#include <algorithm>
#include <iterator>

namespace herd::coordinator {

ProgressBoard::JobEntry& ProgressBoard::EntryLocked(const std::string& job_id) {
  // A forgotten job reported again starts afresh; forgotten_ matters only while it is absent.
  return jobs_[job_id];
}

void ProgressBoard::ResetWorldLocked(JobEntry& e, int world_size, int64_t resume_step) {
  e.world_size = world_size;
  e.latest.clear();
  e.pending.clear();
  e.rate_window.clear();
  e.view.tokens_per_second = 0;
  e.view.step = resume_step;
  e.eval_step = std::min(e.eval_step, resume_step);
  auto& history = e.view.loss_history;
  history.erase(std::find_if(history.begin(), history.end(),
                             [&](const auto& point) { return point.first > resume_step; }),
                history.end());
}

void ProgressBoard::CountStepLocked(JobEntry& e, int64_t step, const PendingStep& p) {
  JobProgressView& v = e.view;
  v.step = step;
  // Every rank has reported, so rank 0 has: it carries the global figures.
  if (p.rank0) {
    const ProgressSample& r0 = *p.rank0;
    if (r0.total_steps > 0) v.total_steps = r0.total_steps;
    v.epoch = r0.epoch;
    v.loss = r0.loss;
    v.learning_rate = r0.learning_rate;
    v.trained_tokens += r0.trained_tokens;
    if (r0.loss) {
      v.loss_history.emplace_back(step, *r0.loss);
      if (v.loss_history.size() > kMaxLossHistory) v.loss_history.erase(v.loss_history.begin());
    }
  }
  e.rate_window.emplace_back(p.tokens, p.max_step_seconds);
  while (e.rate_window.size() > kRateWindowSteps) e.rate_window.pop_front();
  int64_t tokens = 0;
  double seconds = 0;
  for (const auto& [t, s] : e.rate_window) {
    tokens += t;
    seconds += s;
  }
  v.tokens_per_second = seconds > 0 ? static_cast<double>(tokens) / seconds : 0;
  v.update_time = std::max(v.update_time, p.latest_time);
}

void ProgressBoard::Report(const std::string& job_id, int world_size,
                           const std::vector<ProgressSample>& points,
                           const std::vector<EvalSample>& evals) {
  absl::MutexLock lock(&mu_);
  JobEntry& e = EntryLocked(job_id);
  bool changed = false;
  if (world_size > 0 && world_size != e.world_size) {
    ResetWorldLocked(e, world_size, e.view.step);
    changed = true;
  }
  for (const ProgressSample& point : points) {
    if (point.rank < 0 || point.rank >= e.world_size || point.step <= e.view.step) continue;
    auto latest = e.latest.find(point.rank);
    if (latest != e.latest.end() && point.step <= latest->second.step) continue;
    e.latest[point.rank] = point;
    PendingStep& p = e.pending[point.step];
    ++p.ranks_reported;
    p.tokens += point.tokens;
    p.max_step_seconds = std::max(p.max_step_seconds, point.step_seconds);
    p.latest_time = std::max(p.latest_time, point.time);
    if (point.rank == 0) p.rank0 = point;
  }
  // Count the complete steps in order. Once a step is complete every rank's cursor is past the
  // steps below it, so those can never complete: drop them with it.
  for (auto it = e.pending.begin(); it != e.pending.end();) {
    if (it->second.ranks_reported < e.world_size) {
      ++it;
      continue;
    }
    CountStepLocked(e, it->first, it->second);
    it = e.pending.erase(e.pending.begin(), std::next(it));
    changed = true;
  }
  while (e.pending.size() > kMaxPendingSteps) e.pending.erase(e.pending.begin());
  for (const EvalSample& eval : evals) {
    if (eval.step <= e.eval_step) continue;
    e.eval_step = eval.step;
    e.view.eval_loss = eval.eval_loss;
    e.view.eval_token_accuracy =
        eval.eval_loss ? std::optional<double>(eval.token_accuracy) : std::nullopt;
    e.view.update_time = std::max(e.view.update_time, eval.time);
    changed = true;
  }
  if (changed) TouchLocked(e);
}

void ProgressBoard::CompleteThrough(const std::string& job_id, int64_t step) {
  absl::MutexLock lock(&mu_);
  auto found = jobs_.find(job_id);
  if (found == jobs_.end()) return;
  JobEntry& e = found->second;
  bool changed = false;
  for (auto it = e.pending.begin(); it != e.pending.end() && it->first <= step;) {
    if (it->second.rank0) {
      CountStepLocked(e, it->first, it->second);
      changed = true;
    }
    it = e.pending.erase(it);
  }
  if (changed) TouchLocked(e);
}

void ProgressBoard::SetTotalSteps(const std::string& job_id, int64_t total_steps) {
  absl::MutexLock lock(&mu_);
  JobEntry& e = EntryLocked(job_id);
  if (e.view.total_steps == total_steps && e.view.version > 0) return;
  e.view.total_steps = total_steps;
  TouchLocked(e);
}

void ProgressBoard::NewGeneration(const std::string& job_id, int world_size, int64_t resume_step) {
  absl::MutexLock lock(&mu_);
  JobEntry& e = EntryLocked(job_id);
  ResetWorldLocked(e, world_size, std::max<int64_t>(resume_step, 0));
  TouchLocked(e);
}

std::optional<JobProgressView> ProgressBoard::Get(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.view;
}

int64_t ProgressBoard::Version(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? 0 : it->second.view.version;
}

std::optional<JobProgressView> ProgressBoard::WaitForChange(const std::string& job_id,
                                                            int64_t after_version,
                                                            absl::Time deadline) const {
  absl::MutexLock lock(&mu_);
  auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = jobs_.find(job_id);
    if (it != jobs_.end()) return it->second.view.version > after_version;
    return forgotten_.count(job_id) > 0;
  };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return std::nullopt;
  return it->second.view;
}

void ProgressBoard::Forget(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  jobs_.erase(job_id);
  if (forgotten_.insert(job_id).second) forgotten_order_.push_back(job_id);
  while (forgotten_order_.size() > kMaxForgotten) {
    forgotten_.erase(forgotten_order_.front());
    forgotten_order_.pop_front();
  }
}

std::vector<ProgressSample> ProgressBoard::LatestPerRank(const std::string& job_id) const {
  absl::MutexLock lock(&mu_);
  std::vector<ProgressSample> out;
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return out;
  for (const auto& [rank, sample] : it->second.latest) out.push_back(sample);
  return out;
}

}  // namespace herd::coordinator
