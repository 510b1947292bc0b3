# shellcheck shell=bash
# What scripts/check_training_status.sh reads about a run: its output dir, log, checkpoints,
# GPU, and status.json merged with those facts (one Python start, stdlib only: fast).
# Needs lib/common.sh (tk_repo_root, tk_python), lib/lock.sh (tk_lock_get, tk_lock_alive)
# and lib/protocol.sh (tk_section).

# tk_abs_path PATH [BASE] — print PATH made absolute against BASE (default: the current directory).
tk_abs_path() {
  local path="$1" base="${2:-$PWD}"
  [[ "$path" == /* ]] || path="$base/$path"
  if [[ -d "$path" ]]; then
    (cd "$path" && pwd -P)
  else
    printf '%s\n' "${path%/}"
  fi
}

# tk_log_output_dir LOG — print the output dir named by the first train.py header in LOG, or nothing.
tk_log_output_dir() {
  [[ -f "$1" ]] || return 0
  awk 'NR > 200 { exit } /^\[TRAINING-[A-Z0-9]+\] trainkit [^:]*: .* -> / { sub(/^.* -> /, ""); print; exit }' "$1"
}

# tk_status_default_output_dir ROOT — print the newest run's output dir (logs/latest.log, else outputs/*/status.json).
tk_status_default_output_dir() {
  local root="$1" dir newest
  dir="$(tk_log_output_dir "$root/logs/latest.log")"
  if [[ -n "$dir" ]]; then
    tk_abs_path "$dir" "$root"
    return 0
  fi
  # shellcheck disable=SC2012  # names come from a glob we control; ls -t is the portable mtime sort
  newest="$(ls -t "$root"/outputs/*/status.json 2>/dev/null | head -n 1 || true)"
  [[ -z "$newest" ]] || dirname "$newest"
}

# tk_status_log OUTPUT_DIR ROOT — print the run's log: the lock's log=, else the newest logs/*.log naming OUTPUT_DIR.
tk_status_log() {
  local dir="$1" root="$2" log file named
  log="$(tk_lock_get "$dir" log)"
  if [[ -n "$log" && -f "$log" ]]; then
    printf '%s\n' "$log"
    return 0
  fi
  # shellcheck disable=SC2012  # see above
  while IFS= read -r file; do
    [[ -f "$file" && ! -L "$file" ]] || continue
    named="$(tk_log_output_dir "$file")"
    if [[ -n "$named" && "$(tk_abs_path "$named" "$root")" == "$dir" ]]; then
      printf '%s\n' "$file"
      return 0
    fi
  done < <(ls -t "$root"/logs/*.log 2>/dev/null)
}

# tk_status_field OUTPUT_DIR KEY — print top-level KEY (a number, or a string without commas) of OUTPUT_DIR/status.json; nothing when absent or null.
tk_status_field() {
  [[ -f "$1/status.json" ]] || return 0
  sed -n -e "/^  \"$2\": null,\{0,1\}\$/q" -e "/^  \"$2\": /{s/^  \"$2\": \"\{0,1\}\([^\",]*\).*/\1/p;q;}" "$1/status.json"
}

# tk_status_undecided OUTPUT_DIR — succeed while the run can still change: its supervisor lives, or status.json says starting/running and its trainer pid lives.
tk_status_undecided() {
  local state pid
  tk_lock_alive "$1" && return 0
  state="$(tk_status_field "$1" state)"
  pid="$(tk_status_field "$1" pid)"
  [[ "$state" == starting || "$state" == running ]] && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# tk_status_wait OUTPUT_DIR TIMEOUT — block until tk_status_undecided fails (TIMEOUT seconds, 0 for none); fail on timeout.
tk_status_wait() {
  local dir="$1" timeout="$2" started now last_report
  started="$(date +%s)"
  last_report="$started"
  while tk_status_undecided "$dir"; do
    now="$(date +%s)"
    if ((timeout > 0 && now - started >= timeout)); then
      return 1
    fi
    if ((now - last_report >= ${TRAINKIT_WAIT_REPORT_SECONDS:-30})); then
      tk_section STATUS "waiting: $(tk_status_field "$dir" state) at step $(tk_status_field "$dir" step)/$(tk_status_field "$dir" max_steps)"
      last_report="$now"
    fi
    sleep "${TRAINKIT_WAIT_INTERVAL:-1}"
  done
}

# tk_newest_checkpoint OUTPUT_DIR — print the path of the highest-numbered checkpoint-N directory, or nothing.
tk_newest_checkpoint() {
  local dir best="" best_step=-1 step
  for dir in "$1"/checkpoint-*/; do
    [[ -d "$dir" ]] || continue
    dir="${dir%/}"
    step="${dir##*/checkpoint-}"
    [[ "$step" =~ ^[0-9]+$ ]] || continue
    if ((10#$step > best_step)); then
      best_step=$((10#$step))
      best="$dir"
    fi
  done
  [[ -z "$best" ]] || printf '%s\n' "$best"
}

# tk_gpu_csv — print "utilization, memory.used, memory.total" per GPU from nvidia-smi; fails without one.
tk_gpu_csv() {
  command -v nvidia-smi >/dev/null || return 1
  local query=(nvidia-smi "--query-gpu=utilization.gpu,memory.used,memory.total" "--format=csv,noheader,nounits")
  if command -v timeout >/dev/null; then
    timeout 10 "${query[@]}" 2>/dev/null
  else
    "${query[@]}" 2>/dev/null
  fi
}

# tk_wandb_summary PYTHON OUTPUT_DIR — print {"path","state","url","summary"} of the run's W&B run as JSON; on failure print why and fail.
tk_wandb_summary() {
  local python="$1" dir="$2" out code=0
  local cmd=("$python" - "$dir")
  command -v timeout >/dev/null && cmd=(timeout 45 "${cmd[@]}")
  out="$(WANDB_SILENT=true "${cmd[@]}" 2>/dev/null <<'PY'
import json, sys
out_dir = sys.argv[1]
path = url = None
try:
    with open(f"{out_dir}/status.json", encoding="utf-8") as fh:
        url = json.load(fh).get("wandb_url")
except (OSError, ValueError, AttributeError):
    pass
if url:
    parts = url.split("://", 1)[-1].split("/")
    # https://wandb.ai/ENTITY/PROJECT/runs/RUN_ID
    if len(parts) >= 5 and parts[3] == "runs":
        path = f"{parts[1]}/{parts[2]}/{parts[4]}"
if path is None:
    try:
        with open(f"{out_dir}/wandb_run.json", encoding="utf-8") as fh:
            record = json.load(fh)
        path = f"{record['project']}/{record['run_id']}"
    except (OSError, ValueError, KeyError, TypeError):
        print("no W&B run recorded (no wandb_url in status.json, no wandb_run.json)")
        sys.exit(1)
try:
    import wandb
except Exception:
    print(f"the wandb package is not importable by {sys.executable}")
    sys.exit(1)
try:
    run = wandb.Api(timeout=15).run(path)
    summary = {}
    for key, value in dict(run.summary._json_dict).items():
        if isinstance(value, (bool, int, float, str)) and (not key.startswith("_") or key in ("_step", "_runtime")):
            summary[key] = value
    print(json.dumps({"path": path, "state": run.state, "url": run.url, "summary": summary}))
except BaseException as exc:  # the API raises many kinds; the caller turns any into a WARNING
    text = str(exc).strip().splitlines()
    print(f"W&B API query for {path} failed: {exc.__class__.__name__}" + (f": {text[0][:200]}" if text else ""))
    sys.exit(1)
PY
  )" || code=$?
  if ((code == 124)); then
    out="W&B API query timed out after 45 s"
  fi
  printf '%s\n' "$(printf '%s\n' "$out" | tail -n 1)"
  return "$code"
}

# tk_status_read PY STATUS_FILE STALE_S SUP_ALIVE TMUX_ALIVE CKPT LOG GPU_CSV WANDB_JSON REFUSED — print st_* assignments to eval (st_json: merged JSON).
tk_status_read() {
  "$1" - "${@:2}" <<'PY'
import json, os, shlex, sys, time
from datetime import datetime

status_path, stale_after, sup_alive, tmux_alive, ckpt, log, gpu_csv, wandb_json, refused = sys.argv[1:10]
out = {}


def emit(name, value):
    out[name] = "" if value is None else str(value)


def duration(seconds):
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def pid_alive(pid):
    if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


status, problem = None, ""
try:
    with open(status_path, encoding="utf-8") as fh:
        status = json.load(fh)
    if not isinstance(status, dict):
        status, problem = None, "status.json is not a JSON object"
except FileNotFoundError:
    pass
except (OSError, ValueError) as exc:
    problem = f"status.json is unreadable ({exc.__class__.__name__}: {exc})"

gpu = None
devices = []
for index, line in enumerate(l for l in gpu_csv.splitlines() if l.strip()):
    fields = [f.strip() for f in line.split(",")]
    try:
        util, used, total = (int(float(f)) for f in fields[:3])
    except ValueError:
        continue
    devices.append({"index": index, "utilization_percent": util, "memory_used_mib": used, "memory_total_mib": total})
if devices:
    gpu = {**{k: v for k, v in devices[0].items() if k != "index"}, "count": len(devices), "devices": devices}

if refused == "1" and not problem:
    # train.py leaves status.json alone when it refuses to start (exit 1, nothing written):
    # the supervisor's newer exit file is the only record, and the old state is no longer true.
    status = {**(status or {"output_dir": os.path.dirname(status_path), "step": 0, "max_steps": None}),
              "state": "failed", "exit_code": 1, "message": "train.py refused to start the run (exit 1)"}

age = None
stale = False
trainer_alive = False
if status is not None:
    try:
        age = max(0, int(time.time() - datetime.fromisoformat(status["updated_at"]).timestamp()))
    except (KeyError, TypeError, ValueError):
        age = None
    trainer_alive = pid_alive(status.get("pid"))
    stale = (
        status.get("state") in ("starting", "running")
        and not trainer_alive
        and sup_alive != "1"
        and age is not None
        and age > int(stale_after)
    )

merged = dict(status) if status is not None else {"state": None, "output_dir": os.path.dirname(status_path)}
merged.update(
    tmux_alive=tmux_alive == "1",
    supervisor_alive=sup_alive == "1",
    newest_checkpoint=ckpt or None,
    gpu=gpu,
    log=log or None,
    stale=stale,
    updated_seconds_ago=age,
)
if wandb_json:
    try:
        merged["wandb_summary"] = json.loads(wandb_json)
    except ValueError:
        merged["wandb_summary"] = None
emit("st_json", json.dumps(merged))
emit("st_problem", problem)
emit("st_found", "1" if status is not None else "0")
emit("st_stale", "1" if stale else "0")
emit("st_trainer_alive", "1" if trainer_alive else "0")
emit("st_age", age)
emit("st_gpu", "\n".join(
    f"GPU {d['index']}: {d['utilization_percent']}% utilisation, {d['memory_used_mib']:,}/{d['memory_total_mib']:,} MiB"
    for d in devices
))
if status is not None:
    step, max_steps = status.get("step"), status.get("max_steps")
    emit("st_state", status.get("state"))
    total = max_steps if isinstance(max_steps, int) and max_steps > 0 else None
    emit("st_steps", f"{step}/{total or '?'}")
    percent = f" ({100 * step / total:.1f}%)" if total and isinstance(step, int) else ""
    emit("st_progress", f"{step}/{total or '?'}{percent}")
    loss = status.get("loss")
    emit("st_loss", f"{loss:.4f}" if isinstance(loss, (int, float)) else "n/a")
    tps = status.get("tokens_per_second")
    emit("st_tps", f"{tps:,.0f}" if isinstance(tps, (int, float)) else "n/a")
    emit("st_eta", duration(status.get("eta_seconds")))
    emit("st_elapsed", duration(status.get("elapsed_seconds")))
    emit("st_updated", status.get("updated_at"))
    emit("st_pid", status.get("pid"))
    emit("st_resume_count", status.get("resume_count"))
    emit("st_wandb_url", status.get("wandb_url"))
    emit("st_exit_code", status.get("exit_code"))
    emit("st_message", status.get("message"))
    emit("st_last_checkpoint", status.get("last_checkpoint"))
if wandb_json:
    try:
        record = json.loads(wandb_json)
        emit("st_wandb", "\n".join(f"{k}: {v}" for k, v in sorted(record["summary"].items())))
        emit("st_wandb_path", f"{record['path']} ({record['state']})")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
for name, value in out.items():
    print(f"{name}={shlex.quote(value)}")
PY
}
