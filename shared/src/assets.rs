//! Text the binaries carry deflated (`build.rs`), inflated once, on first use.

use std::sync::OnceLock;

pub struct Packed {
    deflated: &'static [u8],
    text: OnceLock<String>,
}

impl Packed {
    pub const fn new(deflated: &'static [u8]) -> Self {
        Self {
            deflated,
            text: OnceLock::new(),
        }
    }

    /// The text, as the source file holds it.
    pub fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let bytes = miniz_oxide::inflate::decompress_to_vec(self.deflated)
                .expect("deflated by build.rs");
            String::from_utf8(bytes).expect("the source file is UTF-8")
        })
    }
}

/// The `Packed` text of a file `build.rs` deflated, by its name there.
#[macro_export]
macro_rules! packed {
    ($name:literal) => {
        $crate::assets::Packed::new(include_bytes!(concat!(env!("OUT_DIR"), "/", $name)))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_file_reads_back_as_its_source() {
        for (packed, source) in [
            (
                &crate::entrypoints::http::OPENAPI,
                include_str!("entrypoints/openapi.json"),
            ),
            (
                &crate::domain::ZONES_TABLE,
                include_str!("domain/zones.txt"),
            ),
        ] {
            assert_eq!(packed.text(), source);
        }
    }
}
