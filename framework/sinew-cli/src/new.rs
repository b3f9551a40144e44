//! `sinew new <name>`: a new service crate on sinew that builds, and passes
//! its test, at once.
//!
//! [`create`] writes `<parent>/<name>/`:
//!
//! - `Cargo.toml`, depending on `sinew` (and tokio, its runtime) and on
//!   `sinew-build` for the build script, in a workspace of its own;
//! - `build.rs`, compiling `proto/` with sinew-build;
//! - the contract: a starter `proto/<name>/v1/<name>.proto` (package
//!   `<name>.v1`, `-` turned into `_`), or, with
//!   [`NewOptions::proto`], that file (and the files beside it that it
//!   imports) as `proto/<its file name>`;
//! - `src/lib.rs`, the service and the scaffold hosting it (a readiness
//!   probe, health and reflection as the scaffold gives them), with every
//!   method answering `UNIMPLEMENTED` for a given contract;
//! - `src/main.rs`, running it with telemetry on `SINEW_ADDR`;
//! - `tests/<name>.rs`, calling it through the generated resilient client;
//! - `README.md` and `.gitignore`.
//!
//! Nothing is overwritten, and a failure leaves nothing behind: the files
//! are written into a hidden folder beside the target, renamed into place
//! at the end.

mod contract;
mod name;

use std::{
    fmt::Write as _,
    fs, io,
    path::{Path, PathBuf},
};

pub use name::validate_name;

use contract::Contract;

/// What `sinew new` is asked to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOptions {
    /// The crate's name, and its folder's.
    pub name: String,
    /// The folder to create the crate in (`--dir`, `.` by default).
    pub parent: PathBuf,
    /// A contract to start from instead of the starter one (`--proto`).
    pub proto: Option<PathBuf>,
    /// A sinew checkout to depend on by path instead of the published
    /// crates (`--path`).
    pub sinew_path: Option<PathBuf>,
}

impl NewOptions {
    /// Options for a crate called `name` in `parent`, from the starter
    /// contract, on the published sinew.
    pub fn new(name: impl Into<String>, parent: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            parent: parent.into(),
            proto: None,
            sinew_path: None,
        }
    }
}

/// Why `sinew new` created nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewError {
    /// The name cannot name a crate.
    #[error("`{name}` cannot name a crate: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why not.
        reason: String,
    },
    /// The crate's folder is there already.
    #[error("{} already exists; `sinew new` overwrites nothing: pick another name, or another --dir", .0.display())]
    Exists(PathBuf),
    /// The folder to create the crate in is not there.
    #[error("{}: no such folder to create the crate in (--dir)", .0.display())]
    NoParent(PathBuf),
    /// `--path` does not name a sinew checkout.
    #[error("--path {}: not a sinew checkout (it has no framework/sinew/Cargo.toml)", .0.display())]
    NotACheckout(PathBuf),
    /// A path cannot be written into `Cargo.toml` or a contract name.
    #[error("{}: the path is not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    /// The contract given cannot be read.
    #[error("cannot read the contract {}: {source}", path.display())]
    ReadContract {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: io::Error,
    },
    /// The contract given does not compile, or sinew-build refuses it: the
    /// message reads `file:line:column: reason`.
    #[error("the contract does not compile: {0}")]
    Contract(String),
    /// The contract given has nothing to serve.
    #[error("{}: the contract declares no service; `sinew new --proto` needs one to serve", .0.display())]
    NoService(PathBuf),
    /// A method of the contract given takes or answers a message sinew
    /// generates no code for.
    #[error(
        "{method}: its message {message} comes from {file}, which sinew serves but generates no code for; use a message of your own"
    )]
    UnsupportedMessage {
        /// The method, `package.Service/Method`.
        method: String,
        /// The message's full name.
        message: String,
        /// The file that declares it.
        file: String,
    },
    /// Creating a file or folder failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// What could not be written.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// Creates the crate `options` describes, and answers its folder.
///
/// It refuses an invalid name, and a folder that exists; it writes into a
/// hidden folder beside the target and renames it into place at the end,
/// so that a failure leaves nothing behind.
pub fn create(options: &NewOptions) -> Result<PathBuf, NewError> {
    validate_name(&options.name)?;
    if !options.parent.is_dir() {
        return Err(NewError::NoParent(options.parent.clone()));
    }
    let target = options.parent.join(&options.name);
    if target.symlink_metadata().is_ok() {
        return Err(NewError::Exists(target));
    }
    let files = render(options)?;
    let staging = Staging::create(&options.parent, &options.name)?;
    for (relative, contents) in &files {
        let path = staging.dir.join(relative);
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder).map_err(|source| NewError::Write {
                path: folder.to_path_buf(),
                source,
            })?;
        }
        fs::write(&path, contents).map_err(|source| NewError::Write { path, source })?;
    }
    staging.finish(&target)?;
    Ok(target)
}

/// The crate's files, by their paths inside it.
type Files = Vec<(String, String)>;

/// Every file of the crate, in memory.
fn render(options: &NewOptions) -> Result<Files, NewError> {
    let name = options.name.as_str();
    let ident = name::crate_ident(name);
    let (sinew, sinew_build) = dependencies(options.sinew_path.as_deref())?;
    let running = fill(RUNNING, &[("crate", ident.clone())]);
    let mut values = vec![
        ("name", name.to_owned()),
        ("crate", ident.clone()),
        ("sinew_dep", sinew),
        ("sinew_build_dep", sinew_build),
        ("running", running.clone()),
    ];
    let mut files = Files::new();
    match &options.proto {
        None => {
            let package = format!("{ident}.v1");
            let proto_file = format!("proto/{ident}/v1/{ident}.proto");
            values.extend([
                ("package", package.clone()),
                ("pkgmod", format!("{}::v1", name::package_module(&ident))),
                ("proto_file", proto_file.clone()),
                ("service", format!("{package}.Store")),
                (
                    "what",
                    format!(
                        "It serves `{package}.Store`, a small key/value store kept in memory: \
                         a place to start, to replace with your own methods."
                    ),
                ),
                (
                    "call_examples",
                    format!(
                        "sinew call 127.0.0.1:50051 {package}.Store/Put '{{\"key\": \"greeting\", \"value\": \"hello\"}}'\n\
                         sinew call 127.0.0.1:50051 {package}.Store/Get '{{\"key\": \"greeting\"}}'"
                    ),
                ),
            ]);
            files.push((proto_file, fill(STARTER_PROTO, &values)));
            files.push(("src/lib.rs".to_owned(), fill(LIB, &values)));
            files.push((format!("tests/{name}.rs"), fill(TEST, &values)));
        }
        Some(proto) => {
            let contract = Contract::compile(proto)?;
            let first = &contract.services[0];
            let proto_file = format!("proto/{}", contract.file_name);
            let call = match contract.first_unary() {
                Some((service, method)) => format!(
                    "sinew call 127.0.0.1:50051 {}/{} '{{}}'   # UNIMPLEMENTED until written",
                    service.full_name, method.proto_name
                ),
                None => format!("sinew describe 127.0.0.1:50051 {}", first.full_name),
            };
            values.extend([
                ("proto_file", proto_file),
                ("service", first.full_name.clone()),
                (
                    "what",
                    format!(
                        "It serves the services of `proto/{}`; every method answers \
                         `UNIMPLEMENTED` until you write it in `src/lib.rs`.",
                        contract.file_name
                    ),
                ),
                ("call_examples", call),
            ]);
            for (file, text) in &contract.files {
                files.push((format!("proto/{file}"), text.clone()));
            }
            files.push(("src/lib.rs".to_owned(), contract.render_lib(name)));
            files.push((
                format!("tests/{name}.rs"),
                contract.render_test(name, &running),
            ));
        }
    }
    files.push(("Cargo.toml".to_owned(), fill(CARGO_TOML, &values)));
    files.push(("build.rs".to_owned(), BUILD_RS.to_owned()));
    files.push(("src/main.rs".to_owned(), fill(MAIN, &values)));
    files.push(("README.md".to_owned(), fill(README, &values)));
    files.push((".gitignore".to_owned(), GITIGNORE.to_owned()));
    Ok(files)
}

/// The `sinew` and `sinew-build` dependency specifications: the published
/// versions, or the crates of a checkout by absolute path.
fn dependencies(checkout: Option<&Path>) -> Result<(String, String), NewError> {
    let Some(checkout) = checkout else {
        return Ok(("\"0.1\"".to_owned(), "\"0.1\"".to_owned()));
    };
    let framework = checkout.join("framework");
    if !framework.join("sinew/Cargo.toml").is_file()
        || !framework.join("sinew-build/Cargo.toml").is_file()
    {
        return Err(NewError::NotACheckout(checkout.to_path_buf()));
    }
    let root = fs::canonicalize(checkout).map_err(|_| NewError::NotACheckout(checkout.into()))?;
    let spec = |krate: &str| -> Result<String, NewError> {
        let path = root.join("framework").join(krate);
        let text = path
            .to_str()
            .ok_or_else(|| NewError::NotUtf8(path.clone()))?;
        Ok(format!("{{ path = {} }}", toml_string(text)))
    };
    Ok((spec("sinew")?, spec("sinew-build")?))
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `template` with each `{{key}}` replaced by its value.
fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    out
}

/// A hidden folder beside the target, removed on drop unless it was renamed
/// into place.
struct Staging {
    dir: PathBuf,
    done: bool,
}

impl Staging {
    fn create(parent: &Path, name: &str) -> Result<Self, NewError> {
        let pid = std::process::id();
        let mut attempt = 0u32;
        loop {
            let dir = parent.join(format!(".{name}.sinew-new-{pid}-{attempt}"));
            match fs::create_dir(&dir) {
                Ok(()) => return Ok(Self { dir, done: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => {
                    attempt += 1;
                }
                Err(source) => return Err(NewError::Write { path: dir, source }),
            }
        }
    }

    /// Renames the folder to `target`, unless something took that name
    /// meanwhile.
    fn finish(mut self, target: &Path) -> Result<(), NewError> {
        if target.symlink_metadata().is_ok() {
            return Err(NewError::Exists(target.to_path_buf()));
        }
        fs::rename(&self.dir, target).map_err(|source| NewError::Write {
            path: target.to_path_buf(),
            source,
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

const CARGO_TOML: &str = include_str!("new/templates/Cargo.toml.tmpl");
const BUILD_RS: &str = include_str!("new/templates/build.rs.tmpl");
const STARTER_PROTO: &str = include_str!("new/templates/starter.proto.tmpl");
const LIB: &str = include_str!("new/templates/lib.rs.tmpl");
const MAIN: &str = include_str!("new/templates/main.rs.tmpl");
const TEST: &str = include_str!("new/templates/test.rs.tmpl");
const RUNNING: &str = include_str!("new/templates/running.rs.tmpl");
const README: &str = include_str!("new/templates/README.md.tmpl");
const GITIGNORE: &str = include_str!("new/templates/gitignore.tmpl");

#[cfg(test)]
mod tests;
