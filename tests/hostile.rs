//! Hostile files: sizes read from a file (npy/npz/safetensors headers, image headers, external
//! data references, tensor dims) that overflow, promise more than the file holds or would need
//! gigabytes. Each is refused with an error naming the file or tensor and the numbers, before
//! anything of that size is allocated (these tests would abort or be killed otherwise).

mod support;

use std::io::Write;
use std::path::Path;

use quantize_rs::onnx::proto::{StringStringEntryProto, dtype, tensor_proto::DataLocation};
use quantize_rs::onnx::shape::Dim;
use quantize_rs::{ImagePreprocess, InputSpec, Model, load_samples};
use support::*;

fn input(name: &str, elem_type: i32, dims: &[usize]) -> InputSpec {
    InputSpec { name: name.into(), elem_type, dims: dims.iter().map(|&d| Dim::Fixed(d)).collect() }
}

/// A `.npy` file: version 1 header for `shape` of `descr`, then `data`.
fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn load_err(path: &Path, inputs: &[InputSpec], image: Option<&ImagePreprocess>) -> String {
    match load_samples(path, inputs, image, None) {
        Ok(s) => panic!("{} loaded {} samples", path.display(), s.len()),
        Err(e) => {
            eprintln!("hostile: {e}");
            e.to_string()
        }
    }
}

fn contains_all(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "expected '{p}' in: {msg}");
    }
}

#[test]
fn npy_headers_that_overflow_or_promise_more_than_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = [input("x", dtype::FLOAT, &[1, 4])];
    let cases: [(&str, Vec<u8>, &[&str]); 4] = [
        // 2^40 x 2^40 elements: the count overflows.
        (
            "overflow.npy",
            npy("<f4", "(1099511627776, 1099511627776)", &[0; 16]),
            &["shape [1099511627776, 1099511627776] is too large to hold"],
        ),
        // An empty array whose other dimension cannot be laid out.
        ("empty.npy", npy("<f4", "(0, 9223372036854775808)", &[]), &["too large to hold"]),
        // 1 GiB promised by a file of a few hundred bytes.
        (
            "short.npy",
            npy("<f4", "(1, 268435456)", &[0; 16]),
            &["shape [1, 268435456] of <f4 needs 1073741824 bytes of data, but the file holds 144 bytes in all"],
        ),
        // Version 2: a 4 GiB header length in a file of 12 bytes.
        ("header.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff".to_vec(), &["header says it is 4294967295 bytes long"]),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let msg = load_err(&path, &x, None);
        contains_all(&msg, expect);
        assert!(msg.contains(name), "names the file: {msg}");
    }
    // Data past the array's end is bounded too: read up to one byte more, then refused.
    let path = dir.path().join("long.npy");
    std::fs::write(&path, npy("<f4", "(1, 4)", &[0; 4096])).unwrap();
    contains_all(&load_err(&path, &x, None), &["needs 16 bytes of data, the file holds 17 or more"]);
}

/// An `.npz` with one deflated entry `x.npy` holding `npy`.
fn npz(npy: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("x.npy", opts).unwrap();
    zip.write_all(npy).unwrap();
    zip.finish().unwrap().into_inner()
}

/// Overwrites the uncompressed size the local header and the central directory declare.
fn declare_size(zip: &mut [u8], size: u32) {
    for (signature, at) in [(0x04034b50u32, 22), (0x02014b50, 24)] {
        let start = zip.windows(4).position(|w| w == signature.to_le_bytes()).unwrap();
        zip[start + at..start + at + 4].copy_from_slice(&size.to_le_bytes());
    }
}

#[test]
fn npz_entries_that_inflate_past_what_they_declare_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let x = [input("x", dtype::FLOAT, &[1, 4])];
    // 64 MiB of zeros deflate to ~64 KiB. The archive says the entry inflates to 1000 bytes:
    // the header's 64 MiB is refused before any of it is inflated.
    let zeros = vec![0u8; 64 << 20];
    let mut bomb = npz(&npy("<f4", "(16777216,)", &zeros));
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    declare_size(&mut bomb, 1000);
    let path = dir.path().join("bomb.npz");
    std::fs::write(&path, &bomb).unwrap();
    contains_all(
        &load_err(&path, &x, None),
        &["bomb.npz", "input 'x'", "needs 67108864 bytes of data, but the file holds 1000 bytes in all"],
    );
    // A small header over the same 64 MiB: no more than the header's 16 bytes (and one) are read.
    let path = dir.path().join("trailing.npz");
    std::fs::write(&path, npz(&npy("<f4", "(1, 4)", &zeros))).unwrap();
    contains_all(&load_err(&path, &x, None), &["input 'x'", "needs 16 bytes of data, the file holds 17 or more"]);
}

#[test]
fn safetensors_headers_that_overflow_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let x = [input("x", dtype::FLOAT, &[1, 4])];
    let file = |header: &str, data: &[u8]| {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    };
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("len.safetensors", u64::MAX.to_le_bytes().to_vec(), "not a valid .safetensors file"),
        (
            "dims.safetensors",
            file(r#"{"x":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#, &[0; 16]),
            "not a valid .safetensors file",
        ),
        (
            "offsets.safetensors",
            file(r#"{"x":{"dtype":"F32","shape":[268435456],"data_offsets":[0,1073741824]}}"#, &[0; 16]),
            "not a valid .safetensors file",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let msg = load_err(&path, &x, None);
        contains_all(&msg, &[name, expect]);
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG that declares `width` x `height` RGB pixels and holds a few bytes of them.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], body: &[u8]| {
        let mut c = (body.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(body);
        c.extend_from_slice(&crc32(&[kind, body].concat()).to_be_bytes());
        c
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    // A zlib stream of a few zero bytes (stored block).
    let idat = [0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0, 0, 0, 1];
    [b"\x89PNG\r\n\x1a\n".to_vec(), chunk(b"IHDR", &ihdr), chunk(b"IDAT", &idat), chunk(b"IEND", &[])].concat()
}

#[test]
fn images_that_decode_to_gigapixels_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let x = [input("x", dtype::FLOAT, &[1, 3, 8, 8])];
    let pre = ImagePreprocess::new([8, 8]);
    let path = dir.path().join("huge.png");
    let bytes = png_header_only(100_000, 100_000);
    assert!(bytes.len() < 100);
    std::fs::write(&path, bytes).unwrap();
    contains_all(
        &load_err(&path, &x, Some(&pre)),
        &["huge.png", "input 'x'", "the image is 100000x100000 pixels, over the decoding limits"],
    );
    // Within each side's limit but over the memory limit: 16000 x 16000 RGB is 768 MB.
    std::fs::write(&path, png_header_only(16_000, 16_000)).unwrap();
    contains_all(&load_err(&path, &x, Some(&pre)), &["the image is 16000x16000 pixels, over the decoding limits"]);
    // The preprocessing size comes from a config file: checked before it is multiplied out.
    let good = dir.path().join("small.png");
    std::fs::write(&good, png_header_only(1, 1)).unwrap();
    for size in [[1 << 40, 1 << 40], [100_000, 100_000], [0, 8]] {
        let pre = ImagePreprocess::new(size);
        let msg = load_err(&good, &x, Some(&pre));
        contains_all(
            &msg,
            &["small.png", &format!("image size [{}, {}] is empty or over the limit", size[0], size[1])],
        );
    }
}

fn external_model(dir: &Path, dims: &[i64], entries: &[(&str, String)]) -> std::path::PathBuf {
    let g = graph(
        "ext",
        vec![node("MatMul", &["X", "W"], &["Y"]).named("mm")],
        vec![f32_tensor("W", &[4, 2], &[0.5; 8])],
        vec![value_info("X", dtype::FLOAT, &[1, 4])],
        vec![value_info("Y", dtype::FLOAT, &[1, 2])],
    );
    let mut m = model(g, 13);
    let w = &mut m.graph.as_mut().unwrap().initializer[0];
    w.dims = dims.to_vec();
    w.raw_data = None;
    w.data_location = Some(DataLocation::External as i32);
    w.external_data = entries
        .iter()
        .map(|(k, v)| StringStringEntryProto { key: Some((*k).into()), value: Some(v.clone()) })
        .collect();
    write(dir, "ext.onnx", &m)
}

#[test]
fn external_tensors_larger_than_their_file_or_memory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("w.bin"), [0u8; 32]).unwrap();
    let hundred_gb: u64 = 100 << 30;
    let load_err = |p: &Path| {
        let e = Model::load(p).unwrap_err().to_string();
        eprintln!("hostile: {e}");
        e
    };
    // 100 GB declared, 32 bytes on disk.
    let p = external_model(
        d,
        &[(hundred_gb / 4) as i64],
        &[("location", "w.bin".into()), ("length", hundred_gb.to_string())],
    );
    contains_all(
        &load_err(&p),
        &["tensor 'W'", "range offset 0 + length 107374182400 passes the end of 'w.bin' (32 bytes)"],
    );
    // An offset that overflows with the length.
    let p = external_model(
        d,
        &[4, 2],
        &[("location", "w.bin".into()), ("offset", u64::MAX.to_string()), ("length", "32".into())],
    );
    contains_all(&load_err(&p), &["tensor 'W'", "passes the end of 'w.bin'"]);
    // Dims that overflow, and dims that disagree with the length.
    let p = external_model(d, &[1 << 40, 1 << 40, 3, 3], &[("location", "w.bin".into())]);
    contains_all(&load_err(&p), &["tensor 'W'", "[1099511627776, 1099511627776, 3, 3]"]);
    let p = external_model(d, &[4, 4], &[("location", "w.bin".into())]);
    contains_all(
        &load_err(&p),
        &["tensor 'W'", "range of 'w.bin' holds 32 bytes, but the tensor's dims [4, 4] of float32 need 64"],
    );
    // A sparse 100 GB file that really is that long: mapped, not read, it loads; decoding the
    // tensor would need more memory than this machine has, and is refused before allocating.
    let sparse = std::fs::File::create(d.join("big.bin")).unwrap();
    if sparse.set_len(hundred_gb).is_ok() {
        let p = external_model(d, &[(hundred_gb / 8) as i64, 2], &[("location", "big.bin".into())]);
        let mut model = Model::load(&p).unwrap_or_else(|e| panic!("a large external tensor loads mapped: {e}"));
        // Never `unwrap_err`: its panic would print the 100 GB tensor.
        let e = match quantize_rs::quantize_model(&mut model, &quantize_rs::Recipe::default()) {
            Ok(_) => panic!("quantized a 100 GB tensor"),
            Err(e) => e.to_string(),
        };
        eprintln!("hostile: {e}");
        contains_all(&e, &["tensor 'W'", "107374182400 bytes", "more than the", "must fit in memory"]);
    }
}
