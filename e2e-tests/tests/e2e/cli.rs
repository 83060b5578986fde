//! The `e2eb` command as a user runs it, against the real stack: the real
//! binary in a child process with a cleared environment, secrets on stdin
//! through `--password-fd 0`, results read from its `--json` output and
//! its exit codes. `e2eb` stores its backups in format v3 (packs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use device_sim::phone;
use e2e_tests::{MAX_GUESSES, Stack, bin};
use serde_json::Value;

/// Exit codes `e2eb --help` documents.
const USAGE: i32 = 2;
const WRONG_PASSWORD: i32 = 3;
const KEY_ERASED: i32 = 4;
const INTEGRITY: i32 = 5;

/// One device running `e2eb` for one account.
struct Device<'a> {
    stack: &'a Stack,
    account: &'static str,
    dir: PathBuf,
}

impl Device<'_> {
    /// Runs `e2eb ARGS` with `stdin` as its standard input (debug logs on,
    /// so the secret scans see everything it could log).
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(bin("e2eb"))
            .env_clear()
            .envs(self.stack.sim_env())
            .env("E2EB_ACCOUNT", self.account)
            .env("E2EB_DEVICE_DIR", &self.dir)
            .env("E2EB_INSECURE_FAST_KSF", "true")
            .env("RUST_LOG", "debug")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start e2eb");
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
        drop(input);
        child.wait_with_output().expect("e2eb finishes")
    }

    /// Runs and requires success.
    fn ok(&self, args: &[&str], stdin: &str) -> Output {
        let output = self.run(args, stdin);
        assert!(
            output.status.success(),
            "e2eb {args:?} failed with {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs with `--json` and requires success; the parsed object.
    fn json(&self, args: &[&str], stdin: &str) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        json_of(&self.ok(&with_json, stdin))
    }
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A folder as a user has one: nested directories, an empty file, text,
/// and incompressible bytes spanning several chunks.
fn make_folder(root: &Path) {
    std::fs::create_dir_all(root.join("docs/2026/notes")).unwrap();
    std::fs::create_dir_all(root.join("photos")).unwrap();
    std::fs::write(root.join("docs/empty.txt"), b"").unwrap();
    std::fs::write(root.join("docs/2026/notes/todo.md"), "# to do\n- back up\n").unwrap();
    let mut noise = vec![0u8; 700 * 1024];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for byte in &mut noise {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(root.join("photos/beach.raw"), &noise).unwrap();
}

fn assert_same_tree(original: &Path, restored: &Path) {
    assert_eq!(
        phone::diff_trees(original, restored).unwrap(),
        Vec::<String>::new()
    );
    assert!(restored.join("docs/empty.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn key_user_backs_up_and_restores_byte_equal_on_a_new_device_with_the_64_digits() {
    let stack = Stack::start().await.unwrap();
    let folder = stack.dir().join("my-folder");
    make_folder(&folder);
    let device = Device {
        stack: &stack,
        account: "cli-key",
        dir: stack.dir().join("device"),
    };

    let made = device.json(&["key", "new"], "");
    let shown = made["key"].as_str().unwrap().replace(' ', "");
    assert_eq!(shown.len(), 64);
    let key_file = device.dir.join("cli-key/key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    assert_eq!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .replace([' ', '\n'], ""),
        shown
    );
    // A second `key new` would orphan the first key: refused.
    assert_eq!(device.run(&["key", "new"], "").status.code(), Some(USAGE));

    device.ok(&["enable", "--key"], "");
    let backup = device.json(&["backup", folder.to_str().unwrap()], "");
    assert_eq!(backup["generation"], 1);
    assert_eq!(backup["files"], 3);
    assert_eq!(backup["plain_bytes"], 700 * 1024 + 18);

    let status = device.json(&["status"], "");
    assert_eq!(status["method"], "key");
    assert_eq!(status["pointer"]["committed"], 1);
    assert_eq!(status["backup"]["generation"], 1);
    assert_eq!(status["backup"]["format"], 3);
    assert_eq!(status["backup"]["packs"], 1);
    assert_eq!(status["vouched"], "committed");

    // A new device that only has the 64 digits, typed in through --key-fd.
    let new_device = Device {
        stack: &stack,
        account: "cli-key",
        dir: stack.dir().join("new-device"),
    };
    let restored = stack.dir().join("restored");
    let report = new_device.json(
        &["restore", restored.to_str().unwrap(), "--key-fd", "0"],
        made["key"].as_str().unwrap(),
    );
    assert_eq!(report["generation"], 1);
    assert_same_tree(&folder, &restored);

    // The target must be empty.
    let again = device.run(&["restore", restored.to_str().unwrap()], "");
    assert_eq!(again.status.code(), Some(USAGE), "{}", text(&again));
    assert!(text(&again).contains("not empty"), "{}", text(&again));
}

/// Flips one byte in the middle of the account's largest stored pack (the
/// one holding the incompressible photo) in the local S3 data dir.
fn tamper_with_largest_pack(stack: &Stack, account: &str) {
    let packs = stack.bucket_dir().join(format!("v3/{account}/packs"));
    let largest = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a stored pack");
    let mut bytes = std::fs::read(&largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&largest, &bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_pack_makes_restore_exit_with_the_integrity_code_and_leave_nothing() {
    let stack = Stack::start().await.unwrap();
    let folder = stack.dir().join("my-folder");
    make_folder(&folder);
    let device = Device {
        stack: &stack,
        account: "cli-tamper",
        dir: stack.dir().join("device"),
    };
    device.json(&["key", "new"], "");
    device.ok(&["enable", "--key"], "");
    let backup = device.json(&["backup", folder.to_str().unwrap()], "");
    assert_eq!(backup["format"], 3);
    assert_eq!(backup["packs"], 1, "{backup}");

    tamper_with_largest_pack(&stack, "cli-tamper");
    let target = stack.dir().join("restored-after-tampering");
    let tampered = device.run(&["restore", target.to_str().unwrap(), "--json"], "");
    assert_eq!(
        tampered.status.code(),
        Some(INTEGRITY),
        "{}",
        text(&tampered)
    );
    let error = json_of(&tampered);
    assert_eq!(error["error"]["kind"], "integrity");
    assert_eq!(error["error"]["exit_code"], INTEGRITY);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("photos/beach.raw"),
        "{error}"
    );
    assert!(!target.exists(), "a failed restore leaves nothing behind");
}

/// `args` with the password read from standard input.
fn with_fd<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &["--password-fd", "0"]].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn password_user_restores_on_a_new_device_and_wrong_guesses_end_in_key_erased() {
    let stack = Stack::start().await.unwrap();
    let folder = stack.dir().join("my-folder");
    make_folder(&folder);
    let folder = folder.to_str().unwrap();
    let password = "correct horse battery staple 7Qz";
    let changed = "a new password for the backups 9Xw";
    let line = format!("{password}\n");
    let phone = Device {
        stack: &stack,
        account: "cli-pw",
        dir: stack.dir().join("device"),
    };

    // argv cannot carry a password.
    let refused = phone.run(&["enable", "--password", password], "");
    assert_eq!(refused.status.code(), Some(USAGE));

    let mut outputs = vec![phone.ok(&with_fd(&["enable", "--password"]), &line)];
    assert!(
        !phone.dir.join("cli-pw").exists(),
        "a password user's device keeps no key"
    );
    outputs.push(phone.ok(&with_fd(&["backup", folder, "--json"]), &line));
    assert_eq!(json_of(outputs.last().unwrap())["generation"], 1);

    // The phone is lost; a new device has only the password.
    let new_phone = Device {
        stack: &stack,
        account: "cli-pw",
        dir: stack.dir().join("new-device"),
    };
    let restored = stack.dir().join("restored");
    outputs.push(new_phone.ok(&with_fd(&["restore", restored.to_str().unwrap()]), &line));
    assert_same_tree(Path::new(folder), &restored);

    // Change the password: the current one, then the new one, one per line.
    outputs.push(new_phone.ok(
        &with_fd(&["password", "change"]),
        &format!("{password}\n{changed}\n"),
    ));

    // The old password is now wrong: exit 3, and the JSON says so.
    let again = stack.dir().join("again");
    let again = again.to_str().unwrap();
    let wrong = new_phone.run(&with_fd(&["restore", again, "--json"]), &line);
    assert_eq!(
        wrong.status.code(),
        Some(WRONG_PASSWORD),
        "{}",
        text(&wrong)
    );
    let error = json_of(&wrong);
    assert_eq!(error["error"]["kind"], "wrong_password");
    assert_eq!(error["error"]["exit_code"], WRONG_PASSWORD);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong password;"),
        "{}",
        text(&wrong)
    );
    outputs.push(wrong);
    outputs.push(new_phone.ok(&with_fd(&["restore", again]), &format!("{changed}\n")));
    assert_same_tree(Path::new(folder), Path::new(again));

    // Guess until the vault erases the key: exit 3 until the last, exit 4.
    let never = stack.dir().join("never-restored");
    let never = never.to_str().unwrap();
    let mut codes = Vec::new();
    for guess in 1..=MAX_GUESSES {
        let output = new_phone.run(&with_fd(&["restore", never]), &format!("guess {guess}\n"));
        codes.push(output.status.code());
        outputs.push(output);
    }
    let mut expected = vec![Some(WRONG_PASSWORD); MAX_GUESSES as usize - 1];
    expected.push(Some(KEY_ERASED));
    assert_eq!(codes, expected, "{}", text(outputs.last().unwrap()));
    let erased = new_phone.run(&with_fd(&["restore", never]), &format!("{changed}\n"));
    assert_eq!(
        erased.status.code(),
        Some(KEY_ERASED),
        "even the right password"
    );
    outputs.push(erased);

    // Start over: what is left is erased and backups begin anew.
    outputs.push(new_phone.ok(
        &with_fd(&["enable", "--password", "--start-over"]),
        &format!("{changed}\n"),
    ));
    outputs.push(new_phone.ok(&with_fd(&["backup", folder]), &format!("{changed}\n")));
    let status = new_phone.json(&["status"], "");
    assert_eq!(status["vouched"], "committed", "{status}");

    // No password in anything e2eb printed or logged (at debug), nor in the
    // services' logs.
    let mut everything: Vec<String> = outputs.iter().map(text).collect();
    everything.push(std::fs::read_to_string(stack.log_path("key-vault")).unwrap());
    everything.push(std::fs::read_to_string(stack.log_path("blob-gateway")).unwrap());
    assert!(
        everything[0].contains("Backups enabled"),
        "{}",
        everything[0]
    );
    for (index, output) in everything.iter().enumerate() {
        for secret in [password, changed] {
            assert!(!output.contains(secret), "output {index} holds a password");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn key_user_rotates_the_old_key_stops_working_and_disable_deletes_everything() {
    let stack = Stack::start().await.unwrap();
    let folder = stack.dir().join("my-folder");
    make_folder(&folder);
    let folder = folder.to_str().unwrap();
    let device = Device {
        stack: &stack,
        account: "cli-rotate",
        dir: stack.dir().join("device"),
    };
    let old_key = device.json(&["key", "new"], "")["key"]
        .as_str()
        .unwrap()
        .to_string();
    device.ok(&["enable", "--key"], "");
    device.json(&["backup", folder], "");

    // The new key is shown and replaces the key file.
    let rotated = device.json(&["rotate", folder], "");
    let new_key = rotated["new_key"].as_str().unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(rotated["generation"], 2);
    let key_file = device.dir.join("cli-rotate/key");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), new_key);
    assert!(!device.dir.join("cli-rotate/key.next").exists());

    // The old key opens nothing any more (exit 7); the new one restores.
    let stranger = Device {
        stack: &stack,
        account: "cli-rotate",
        dir: stack.dir().join("other-device"),
    };
    let old = stack.dir().join("with-old-key");
    let refused = stranger.run(
        &["restore", old.to_str().unwrap(), "--key-fd", "0"],
        &old_key,
    );
    assert_eq!(refused.status.code(), Some(7), "{}", text(&refused));
    let restored = stack.dir().join("restored");
    device.json(&["restore", restored.to_str().unwrap()], "");
    assert_same_tree(Path::new(folder), &restored);

    // Disable needs --yes; then the vault record, the objects and the key go.
    let unconfirmed = device.run(&["disable"], "");
    assert_eq!(unconfirmed.status.code(), Some(USAGE));
    let disabled = device.json(&["disable", "--yes"], "");
    assert!(disabled["deleted_objects"].as_u64().unwrap() > 0);
    assert!(!key_file.exists());
    for prefix in ["v3/cli-rotate/", "accounts/cli-rotate/"] {
        assert!(
            stack.list_bucket(prefix).await.unwrap().is_empty(),
            "no object of the account is left under {prefix}"
        );
    }
    let status = device.json(&["status"], "");
    assert_eq!(status["enabled"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn password_user_rotates_on_v3_and_a_new_device_restores_with_the_same_password() {
    let stack = Stack::start().await.unwrap();
    let folder = stack.dir().join("my-folder");
    make_folder(&folder);
    let folder = folder.to_str().unwrap();
    let line = "a password that outlives its key 4Kp\n";
    let phone = Device {
        stack: &stack,
        account: "cli-pw-rotate",
        dir: stack.dir().join("device"),
    };
    let enabled = phone.json(&with_fd(&["enable", "--password"]), line);
    phone.json(&with_fd(&["backup", folder]), line);

    let rotated = phone.json(&with_fd(&["rotate", folder]), line);
    assert_eq!(rotated["generation"], 2);
    assert_eq!(rotated["format"], 3);
    assert_ne!(rotated["key_id"], enabled["key_id"], "{rotated}");
    assert_eq!(
        rotated["uploaded_chunks"], rotated["chunks"],
        "all re-sealed"
    );
    assert!(rotated["deleted_packs"].as_u64().unwrap() > 0, "{rotated}");

    let status = phone.json(&["status"], "");
    assert_eq!(status["vouched"], "committed", "{status}");
    assert_eq!(status["method"], "password");
    assert_eq!(status["rotation_unfinished"], false);

    let new_phone = Device {
        stack: &stack,
        account: "cli-pw-rotate",
        dir: stack.dir().join("new-device"),
    };
    let restored = stack.dir().join("restored");
    let report = new_phone.json(&with_fd(&["restore", restored.to_str().unwrap()]), line);
    assert_eq!(report["key_id"], rotated["key_id"]);
    assert_same_tree(Path::new(folder), &restored);
}
