//! Deflate the files the binaries carry whole (the API's OpenAPI description, the page, the
//! time-zone table): each binary holds them a fifth of their size (the Lambda functions have a
//! size limit), and `assets::Packed` inflates each once, on first use.

const FILES: [(&str, &str); 3] = [
    ("src/entrypoints/openapi.json", "openapi.json.z"),
    ("src/entrypoints/dashboard.html", "dashboard.html.z"),
    ("src/domain/zones.txt", "zones.txt.z"),
];

fn main() {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (source, packed) in FILES {
        println!("cargo:rerun-if-changed={source}");
        let text = std::fs::read(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        let deflated = miniz_oxide::deflate::compress_to_vec(&text, 10);
        std::fs::write(out.join(packed), deflated).unwrap_or_else(|e| panic!("{packed}: {e}"));
    }
    println!("cargo:rerun-if-changed=build.rs");
}
