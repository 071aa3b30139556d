// Schema migrations (see schema.h). Conventions: STRICT tables; times are INTEGER microseconds
// since the Unix epoch (UTC) in columns ending _us; JSON text in columns ending _json; states
// and kinds as their upper-case names so the database reads well in the sqlite3 shell; `seq`
// columns (AUTOINCREMENT, never reused) give listings a stable newest-first order.
//
// Columns that name a blob (sha256) are listed in ReferencedBlobsSql (gc.cc); a new one must be
// added there too, or the garbage collector would delete its blobs.
#include "coordinator/store/schema.h"

namespace herd::coordinator::store {

const std::vector<std::string_view> kMigrations = {
    // 1: the first schema.
    R"sql(
CREATE TABLE tenants (
  name TEXT PRIMARY KEY,
  create_us INTEGER NOT NULL
) STRICT;

-- Bearer tokens, stored as the SHA-256 of the token (token_store.h says why no salt).
CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('USER', 'CLUSTER')),
  tenant TEXT REFERENCES tenants(name),
  label TEXT NOT NULL DEFAULT '',
  create_us INTEGER NOT NULL,
  revoke_us INTEGER,
  CHECK ((kind = 'USER') = (tenant IS NOT NULL))
) STRICT;

CREATE TABLE datasets (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL REFERENCES tenants(name),
  name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  record_count INTEGER NOT NULL,
  format TEXT NOT NULL,
  skip_invalid INTEGER NOT NULL,
  validation_json TEXT NOT NULL,
  create_us INTEGER NOT NULL
) STRICT;
CREATE INDEX datasets_by_tenant ON datasets(tenant, seq);
CREATE INDEX datasets_by_sha256 ON datasets(sha256);

CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  tenant TEXT NOT NULL REFERENCES tenants(name),
  name TEXT NOT NULL,
  spec_json TEXT NOT NULL,
  dataset_id TEXT NOT NULL,
  validation_dataset_id TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('VALIDATING', 'QUEUED', 'RUNNING', 'RECOVERING',
                                       'PUBLISHING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
  generation INTEGER NOT NULL DEFAULT 0,
  world_size INTEGER NOT NULL DEFAULT 0,
  trainer_ids_json TEXT NOT NULL DEFAULT '[]',
  failure_code TEXT,
  failure_message TEXT,
  recoveries INTEGER NOT NULL DEFAULT 0,
  last_checkpoint_step INTEGER NOT NULL DEFAULT 0,
  idempotency_key TEXT NOT NULL,
  plan_json TEXT NOT NULL DEFAULT '',
  progress_json TEXT NOT NULL DEFAULT '',
  train_sha256 TEXT,
  train_size INTEGER,
  validation_sha256 TEXT,
  validation_size INTEGER,
  last_event_seq INTEGER NOT NULL DEFAULT 0,
  create_us INTEGER NOT NULL,
  update_us INTEGER NOT NULL,
  start_us INTEGER,
  end_us INTEGER
) STRICT;
CREATE UNIQUE INDEX jobs_by_idempotency_key ON jobs(tenant, idempotency_key)
  WHERE idempotency_key != '';
CREATE INDEX jobs_by_tenant ON jobs(tenant, seq);
CREATE INDEX jobs_by_state ON jobs(state);
CREATE INDEX jobs_by_dataset ON jobs(tenant, dataset_id);
CREATE INDEX jobs_by_validation_dataset ON jobs(tenant, validation_dataset_id);

CREATE TABLE job_events (
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  sequence INTEGER NOT NULL,
  time_us INTEGER NOT NULL,
  type TEXT NOT NULL,
  state TEXT,
  previous_state TEXT,
  generation INTEGER NOT NULL DEFAULT 0,
  world_size INTEGER NOT NULL DEFAULT 0,
  rank INTEGER NOT NULL DEFAULT 0,
  trainer_id TEXT NOT NULL DEFAULT '',
  step INTEGER NOT NULL DEFAULT 0,
  eval_loss REAL,
  failure_code TEXT,
  failure_message TEXT,
  message TEXT NOT NULL,
  PRIMARY KEY (job_id, sequence)
) STRICT;

CREATE TABLE checkpoints (
  job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
  step INTEGER NOT NULL,
  final INTEGER NOT NULL,
  generation INTEGER NOT NULL,
  files_sha256 TEXT NOT NULL,
  adapter_sha256 TEXT NOT NULL,
  adapter_size INTEGER NOT NULL,
  total_size INTEGER NOT NULL,
  loss REAL,
  eval_loss REAL,
  create_us INTEGER NOT NULL,
  PRIMARY KEY (job_id, step)
) STRICT;
CREATE UNIQUE INDEX checkpoints_one_final ON checkpoints(job_id) WHERE final = 1;

CREATE TABLE checkpoint_files (
  job_id TEXT NOT NULL,
  step INTEGER NOT NULL,
  ordinal INTEGER NOT NULL,
  name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  PRIMARY KEY (job_id, step, ordinal),
  FOREIGN KEY (job_id, step) REFERENCES checkpoints(job_id, step) ON DELETE CASCADE
) STRICT;
CREATE INDEX checkpoint_files_by_sha256 ON checkpoint_files(sha256);

-- Registrations and state transitions only; heartbeats stay in memory (DESIGN.md §1).
CREATE TABLE trainers (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL DEFAULT '',
  device_kind TEXT NOT NULL,
  device_name TEXT NOT NULL,
  device_index INTEGER NOT NULL,
  device_memory_bytes INTEGER NOT NULL,
  metrics_address TEXT NOT NULL,
  agent_version TEXT NOT NULL,
  engine_version TEXT NOT NULL,
  models_json TEXT NOT NULL,
  register_us INTEGER NOT NULL,
  last_seen_us INTEGER NOT NULL
) STRICT;

CREATE TABLE models (
  name TEXT PRIMARY KEY,
  weights_sha256 TEXT NOT NULL,
  weights_size INTEGER NOT NULL,
  create_us INTEGER NOT NULL,
  update_us INTEGER NOT NULL
) STRICT;

CREATE TABLE model_files (
  model TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
  ordinal INTEGER NOT NULL,
  name TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  size_bytes INTEGER NOT NULL,
  PRIMARY KEY (model, ordinal),
  UNIQUE (model, name)
) STRICT;

-- Resumable uploads. committed_offset counts bytes fsynced into part_path (relative to the
-- data dir); a part file longer than that is truncated back on open.
CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(name),
  name TEXT NOT NULL,
  format TEXT NOT NULL,
  skip_invalid INTEGER NOT NULL,
  total_size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  committed_offset INTEGER NOT NULL DEFAULT 0,
  part_path TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('OPEN', 'SEALED', 'FINISHED')),
  result_json TEXT NOT NULL DEFAULT '',
  create_us INTEGER NOT NULL,
  update_us INTEGER NOT NULL,
  expire_us INTEGER NOT NULL
) STRICT;
CREATE INDEX uploads_by_tenant ON uploads(tenant, state);
CREATE INDEX uploads_by_expiry ON uploads(expire_us);
)sql",
};

}  // namespace herd::coordinator::store
