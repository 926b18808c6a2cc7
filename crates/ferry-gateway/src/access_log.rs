//! The access log: `access_log_format` compiled once (a [`Template`]) into literal and variable segments,
//! rendered at the end of each request, and written through a [`LineFile`] (bounded queue,
//! background writer, reopened on SIGUSR1).

use ferry_config::app::AccessLogConf;
pub use ferry_config::template::Template;
use ferry_core::line_file::LineFile;
use std::sync::Arc;
use std::time::Duration;

/// The access-log sink: the compiled template and its file.
pub struct AccessLog {
    pub template: Template,
    pub file: Arc<LineFile>,
}

impl AccessLog {
    /// Opens the file (creating its directory) and starts its writer.
    pub fn start(conf: &AccessLogConf) -> Result<Arc<AccessLog>, String> {
        let template = Template::compile(&conf.format, conf.escape)
            .map_err(|e| format!("nginx_config.http.access_log_format: {e}"))?;
        let file = LineFile::open(&conf.path, "access log")?;
        Ok(Arc::new(AccessLog { template, file }))
    }

    /// Queues a finished line (never blocks).
    pub fn submit(&self, line: String) {
        self.file.submit(line);
    }

    /// Waits (up to `timeout`) until every queued line is on disk.
    pub fn flush(&self, timeout: Duration) {
        self.file.flush(timeout);
    }
}
