//! `--plot`: the measured phase's latency distribution drawn as a PNG percentile spectrum.
//!
//! x is the percentile on a "nines" scale (0, 90, 99, 99.9, 99.99, ...: position `x` stands for
//! percentile `100 * (1 - 10^-x)`), y the latency in microseconds on a log scale. An open-loop
//! run shows two curves, the coordinated-omission corrected latency (from the intended send
//! time) and the service time (from the actual send); a closed-loop run, where the two are the
//! same, shows one. The title summarises the workload and the result.
//!
//! Drawn with `plotters` into an in-memory RGB buffer (its bitmap backend) and encoded with the
//! `png` crate, so the file is a PNG whatever its name. Text uses an embedded subset of DejaVu
//! Sans (`assets/`): no system font or font library is needed. It is registered with plotters'
//! `ab_glyph` support, which plotters uses to measure text, but glyphs are drawn by [`Canvas`]:
//! plotters 0.3.7's own `ab_glyph` drawing drops every glyph's left side bearing, which shifts
//! narrow glyphs ("1.5" comes out as "1 .5").

use crate::report::Report;
use crate::runner::PhaseTotals;
use crate::stats::LatencySummary;
use ab_glyph::{point, Font, FontRef, ScaleFont};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use plotters::style::FontStyle;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};
use std::path::Path;
use std::sync::OnceLock;

/// Image size in pixels.
pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 720;

/// DejaVu Sans cut down to Latin-1 (see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Highest percentile drawn: 99.99999 (seven nines).
const MAX_NINES: f64 = 7.0;
/// Spacing of the sampled percentiles on the nines scale.
const STEP: f64 = 0.02;

/// Curve colours, in series order.
const COLORS: [RGBColor; 2] = [RGBColor(214, 39, 40), RGBColor(31, 119, 180)];

/// Why no plot was written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("no latencies were measured")]
    Empty,
    #[error("the embedded font was rejected")]
    Font,
    #[error("drawing: {0}")]
    Draw(String),
    #[error("encoding the PNG: {0}")]
    Encode(#[from] png::EncodingError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn draw_error<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Width and height of `text` at `size` pixels, as plotters' `ab_glyph` support measures it
/// (advances plus kerning; height `size / 1.24`), so that layouts plotters computes from its own
/// measurements line up with what [`Canvas`] draws.
fn text_box(font: &FontRef<'static>, size: f64, text: &str) -> (i32, i32) {
    let f = font.as_scaled(size as f32);
    let mut width = 0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            width += f.kern(p, id);
        }
        width += f.h_advance(id);
        prev = Some(id);
    }
    (width as i32, (size / 1.24) as i32)
}

/// The bitmap backend with text drawn here, glyph by glyph, at their proper positions.
struct Canvas<'a> {
    inner: BitMapBackend<'a>,
    font: FontRef<'static>,
}

type CanvasResult<T> = Result<T, DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

impl<'a> DrawingBackend for Canvas<'a> {
    type ErrorType = <BitMapBackend<'a> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> CanvasResult<()> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> CanvasResult<()> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> CanvasResult<()> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> CanvasResult<()> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> CanvasResult<()> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> CanvasResult<()> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> CanvasResult<()> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> CanvasResult<()> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> CanvasResult<()> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<T: BackendTextStyle>(&self, text: &str, style: &T) -> CanvasResult<(u32, u32)> {
        let (w, h) = text_box(&self.font, style.size(), text);
        Ok((w.max(0) as u32, h.max(0) as u32))
    }

    fn draw_text<T: BackendTextStyle>(&mut self, text: &str, style: &T, pos: BackendCoord) -> CanvasResult<()> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let Canvas { inner, font } = self;
        let size = style.size();
        // The anchor is a point of the measured box, before rotation (as plotters does it).
        let (w, h) = text_box(font, size, text);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        let f = font.as_scaled(size as f32);
        // Capital letters and digits sit centred in the box.
        let cap = font.outline(f.glyph_id('H')).map_or(f.ascent() * 0.75, |o| o.bounds.max.y * f.v_scale_factor());
        let baseline = (h as f32 + cap) / 2.0;
        let mut caret = 0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = f.glyph_id(c);
            if let Some(p) = prev {
                caret += f.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(f.scale(), point(caret, baseline));
            caret += f.h_advance(id);
            let Some(outline) = f.outline_glyph(glyph) else {
                continue; // a space
            };
            let bounds = outline.px_bounds();
            let mut result = Ok(());
            outline.draw(|x, y, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (x, y) =
                    transform.transform(bounds.min.x as i32 + x as i32 + dx, bounds.min.y as i32 + y as i32 + dy);
                let alpha = color.alpha * f64::from(coverage.min(1.0));
                // The bitmap backend ignores pixels outside the image.
                result = inner.draw_pixel((pos.0 + x, pos.1 + y), BackendColor { alpha, rgb: color.rgb });
            });
            result?;
        }
        Ok(())
    }
}

/// One curve: its legend label and its points (nines, microseconds).
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A latency percentile spectrum ready to draw.
#[derive(Debug, Clone)]
pub struct LatencyPlot {
    pub title: String,
    pub subtitle: String,
    pub curves: Vec<Curve>,
    /// The x axis runs from 0 to this many nines.
    pub nines: f64,
    /// The y axis range in microseconds (powers of ten).
    pub y_range: (f64, f64),
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// A latency in microseconds with about three significant digits.
pub fn format_us(v: f64) -> String {
    let s = if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The percentile at position `x` of the nines scale: 0 -> "0%", 1 -> "90%", 3 -> "99.9%".
pub fn nines_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.ceil() as i64 - 2).clamp(0, 12) as usize;
    format!("{p:.decimals$}%")
}

/// Samples `h` along the nines scale from 0 to `x_end`, ending at its maximum.
fn spectrum(h: &Histogram<u64>, x_end: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity((x_end / STEP) as usize + 2);
    let mut i = 0u32;
    loop {
        let x = f64::from(i) * STEP;
        if x >= x_end - STEP / 2.0 {
            break;
        }
        points.push((x, us(h.value_at_quantile(1.0 - 10f64.powf(-x)))));
        i += 1;
    }
    points.push((x_end, us(h.max())));
    points
}

impl LatencyPlot {
    /// A plot of the named histograms (values in nanoseconds); empty ones are left out.
    pub fn new(title: String, subtitle: String, series: &[(&str, &Histogram<u64>)]) -> Result<Self, PlotError> {
        let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
        let most = series.iter().map(|(_, h)| h.len()).max().ok_or(PlotError::Empty)?;
        // Enough nines to reach the last sample, and at least 99%.
        let nines = (most as f64).log10().ceil().clamp(2.0, MAX_NINES);
        let lo = series.iter().map(|(_, h)| us(h.min())).fold(f64::INFINITY, f64::min).max(0.001);
        let hi = series.iter().map(|(_, h)| us(h.max())).fold(0.0, f64::max).max(lo);
        let y_range = (10f64.powf(lo.log10().floor()), 10f64.powf((hi * 1.05).log10().ceil()));
        let curves = series
            .iter()
            .map(|(name, h)| {
                let s = LatencySummary::of(h);
                let x_end = (h.len() as f64).log10().clamp(1.0, nines);
                Curve {
                    label: format!(
                        "{name}: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                        format_us(s.p50_us),
                        format_us(s.p99_us),
                        format_us(s.p999_us),
                        format_us(s.max_us)
                    ),
                    points: spectrum(h, x_end),
                }
            })
            .collect();
        Ok(LatencyPlot { title, subtitle, curves, nines, y_range })
    }

    /// The plot of a run's measured phase, titled with its workload and results.
    pub fn for_run(report: &Report, measured: &PhaseTotals) -> Result<Self, PlotError> {
        let c = &report.config;
        let mode = match c.rate {
            Some(r) => format!("open loop at {r} ops/s"),
            None => "closed loop".to_string(),
        };
        let title = format!(
            "{} {}, {} keys of {} B ({}), values {} B{}{}, {mode}",
            c.ratio_label,
            c.ratio,
            c.keys,
            c.key_size,
            c.key_dist,
            c.value_size,
            if c.multiget > 1 { format!(", multiget {}", c.multiget) } else { String::new() },
            if c.verify { ", verify" } else { "" },
        );
        let title = if c.protocol == "classic" { title } else { format!("{title}, {} commands", c.protocol) };
        let servers = match c.servers.as_slice() {
            [one] => one.clone(),
            [first, rest @ ..] => format!("{first} and {} more", rest.len()),
            [] => "-".to_string(),
        };
        let mut subtitle = format!(
            "{} thread(s) × {} connection(s), pipeline {}, to {servers}",
            c.threads, c.connections_per_thread, c.pipeline
        );
        if let Some(m) = &report.measured {
            let hit = m.hit_ratio.map_or(String::new(), |h| format!(", hit ratio {:.2}%", h * 100.0));
            subtitle.push_str(&format!(
                " — {} ops in {:.2} s ({:.0} ops/s){hit}, errors {}, timeouts {}",
                m.ops, m.seconds, m.ops_per_sec, m.counters.errors, m.counters.timeouts
            ));
        }
        let r = &measured.rec;
        if c.rate.is_some() {
            Self::new(
                title,
                subtitle,
                &[
                    ("corrected latency (from intended send)", &r.latency),
                    ("service time (from actual send)", &r.service),
                ],
            )
        } else {
            Self::new(title, subtitle, &[("latency", &r.service)])
        }
    }

    /// Draws the plot into an RGB buffer of `WIDTH` x `HEIGHT` pixels.
    pub fn render_rgb(&self) -> Result<Vec<u8>, PlotError> {
        register_font()?;
        let font = FontRef::try_from_slice(FONT).map_err(|_| PlotError::Font)?;
        let mut buf = vec![255u8; WIDTH as usize * HEIGHT as usize * 3];
        {
            let canvas = Canvas { inner: BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)), font };
            let root = canvas.into_drawing_area();
            root.fill(&WHITE).map_err(draw_error)?;
            let (head, body) = root.split_vertically(84);
            head.draw_text(&self.title, &(FAMILY, 24).into_font().color(&BLACK), (24, 16)).map_err(draw_error)?;
            head.draw_text(&self.subtitle, &(FAMILY, 17).into_font().color(&RGBColor(70, 70, 70)), (24, 52))
                .map_err(draw_error)?;
            let mut chart = ChartBuilder::on(&body)
                .margin_left(16)
                .margin_right(56)
                .margin_top(8)
                .margin_bottom(12)
                .x_label_area_size(56)
                .y_label_area_size(96)
                .build_cartesian_2d(0f64..self.nines, (self.y_range.0..self.y_range.1).log_scale())
                .map_err(draw_error)?;
            chart
                .configure_mesh()
                .x_desc("percentile (nines scale)")
                .y_desc("latency (µs)")
                .x_labels(self.nines as usize + 1)
                .x_label_formatter(&|x| nines_label(*x))
                .y_label_formatter(&|y| format_us(*y))
                .label_style((FAMILY, 16))
                .axis_desc_style((FAMILY, 18))
                .bold_line_style(RGBColor(200, 200, 200).stroke_width(1))
                .light_line_style(RGBColor(238, 238, 238).stroke_width(1))
                .draw()
                .map_err(draw_error)?;
            for (i, curve) in self.curves.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                chart
                    .draw_series(LineSeries::new(curve.points.iter().copied(), color.stroke_width(2)))
                    .map_err(draw_error)?
                    .label(curve.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 28, y)], color.stroke_width(3)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FAMILY, 16))
                .background_style(WHITE.mix(0.9).filled())
                .border_style(RGBColor(160, 160, 160).stroke_width(1))
                .draw()
                .map_err(draw_error)?;
            root.present().map_err(draw_error)?;
        }
        Ok(buf)
    }

    /// Draws the plot and encodes it as PNG.
    pub fn png(&self) -> Result<Vec<u8>, PlotError> {
        let rgb = self.render_rgb()?;
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
        Ok(out)
    }

    /// Draws the plot into the PNG file `path`.
    pub fn write_png(&self, path: &Path) -> Result<(), PlotError> {
        std::fs::write(path, self.png()?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    /// 200 000 service times of 20-220 us with a slow tail, and latencies that add a 5 ms
    /// queueing delay to one request in a thousand.
    fn synthetic() -> (Histogram<u64>, Histogram<u64>) {
        let (mut latency, mut service) = (new_histogram(), new_histogram());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut ns = 20_000 + x % 200_000;
            if i % 5_000 == 0 {
                ns *= 10;
            }
            service.record(ns).expect("in range");
            latency.record(ns + if i % 1_000 == 0 { 5_000_000 } else { 0 }).expect("in range");
        }
        (latency, service)
    }

    #[test]
    fn labels() {
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(1.0), "90%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(3.0), "99.9%");
        assert_eq!(nines_label(5.0), "99.999%");
        assert_eq!(format_us(1000.0), "1000");
        assert_eq!(format_us(45.06), "45.1");
        assert_eq!(format_us(10.0), "10");
        assert_eq!(format_us(0.1), "0.1");
        assert_eq!(format_us(2.5), "2.5");
    }

    #[test]
    fn spectrum_axes_fit_the_data() {
        let (latency, service) = synthetic();
        let p = LatencyPlot::new("t".into(), "s".into(), &[("a", &latency), ("b", &service)]).unwrap();
        assert_eq!(p.nines, 6.0, "200 000 samples reach 99.9995%");
        assert_eq!(p.y_range, (10.0, 10_000.0));
        for c in &p.curves {
            assert!(c.points.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "monotone");
            let (x, y) = c.points[c.points.len() - 1];
            assert!((x - 200_000f64.log10()).abs() < 1e-9);
            assert!(y > 2000.0, "ends at the maximum");
        }
        assert!(p.curves[0].label.starts_with("a: p50 "), "{}", p.curves[0].label);
        let empty = new_histogram();
        assert!(matches!(LatencyPlot::new("t".into(), "s".into(), &[("x", &empty)]), Err(PlotError::Empty)));
    }

    #[test]
    fn writes_a_png_of_the_expected_size() {
        let (latency, service) = synthetic();
        let plot = LatencyPlot::new(
            "get:set 10:1, 100000 keys of 16 B (zipf:0.99), values 32 B, open loop at 50000 ops/s".into(),
            "1 thread(s) × 50 connection(s), pipeline 1, to 127.0.0.1:11211 — synthetic".into(),
            &[("corrected latency (from intended send)", &latency), ("service time (from actual send)", &service)],
        )
        .unwrap();
        let path = std::env::temp_dir().join(format!("ringcache-bench-plot-test-{}.png", std::process::id()));
        plot.write_png(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&bytes[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]), WIDTH);
        assert_eq!(u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]), HEIGHT);

        // Decode it again: both curves and some text must be there.
        let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes)).read_info().unwrap();
        let mut rgb = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut rgb).unwrap();
        assert_eq!((info.width, info.height, info.color_type), (WIDTH, HEIGHT, png::ColorType::Rgb));
        let count = |c: RGBColor| rgb.chunks_exact(3).filter(|p| p == &[c.0, c.1, c.2]).count();
        assert!(count(COLORS[0]) > 500, "corrected latency curve drawn");
        assert!(count(COLORS[1]) > 500, "service time curve drawn");
        assert!(count(BLACK) > 2_000, "text and axes drawn");
    }
}
