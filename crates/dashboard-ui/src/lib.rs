//! The dashboard's single-page app, built into the binary.
//!
//! The sources are in `web/` (plain JavaScript modules, no framework);
//! `npm run build` there (Vite) writes `web/dist/`, which is committed and
//! included here byte for byte, so running Ben needs no Node.js.
//! `scripts/test` rebuilds it and fails when the committed build differs
//! from its sources, runs the unit tests (Vitest) and the browser tests
//! (Playwright in Debian's Chromium).

/// The paths the app is served at (the API routes each).
pub const PATHS: [&str; 4] = ["/", "/index.html", "/assets/app.js", "/assets/app.css"];

/// The bytes and content type of the app's file at `path`.
pub fn file(path: &str) -> Option<(&'static [u8], &'static str)> {
    match path {
        "/" | "/index.html" => Some((
            include_bytes!("../web/dist/index.html"),
            "text/html; charset=utf-8",
        )),
        "/assets/app.js" => Some((
            include_bytes!("../web/dist/assets/app.js"),
            "text/javascript; charset=utf-8",
        )),
        "/assets/app.css" => Some((
            include_bytes!("../web/dist/assets/app.css"),
            "text/css; charset=utf-8",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_path_has_its_file_and_the_page_loads_the_script() {
        for p in super::PATHS {
            let (bytes, _) = super::file(p).unwrap();
            assert!(!bytes.is_empty(), "{p}");
        }
        let page = std::str::from_utf8(super::file("/").unwrap().0).unwrap();
        assert!(page.contains("/assets/app.js") && page.contains("/assets/app.css"));
        assert!(super::file("/api/v1/status").is_none());
    }
}
