#pragma once

// Line charts written as SVG text: the training curves, drawn by the library
// itself so that no plotting program (and no shell) is needed.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace resnet {

/// One line of a chart: points (x[i], y[i]); non-finite values are skipped.
struct ChartSeries {
  /// The line's label in the legend.
  std::string name;
  /// The x coordinates of the points.
  std::vector<double> x;
  /// The y coordinates, one per x (extra values of either are ignored).
  std::vector<double> y;
};

/// A chart: a title, an x-axis label and its lines.
struct Chart {
  /// The heading above the plot.
  std::string title;
  /// The label under the x axis.
  std::string x_label;
  /// The lines, drawn in order.
  std::vector<ChartSeries> series;
};

namespace detail {

inline std::string xml_escaped(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Tick marks for [lo, hi]: multiples of 1, 2 or 5 times a power of ten,
// about `count` of them; the range is widened to the outer ticks.
struct Ticks {
  double lo = 0;
  double hi = 1;
  double step = 0.2;
};

inline Ticks nice_ticks(double lo, double hi, int count = 5) {
  if (!(lo <= hi)) {
    return {};
  }
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    const double pad = std::max(std::abs(hi) * 0.1, 1e-3);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / count;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) {
      break;
    }
  }
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step, step};
}

inline std::string tick_label(double v, double step) {
  std::ostringstream o;
  const int decimals =
      step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  o << std::fixed << std::setprecision(decimals)
    << (std::abs(v) < step * 1e-9 ? 0.0 : v);
  return o.str();
}

} // namespace detail

/// The charts side by side in one SVG picture of `width` x `height` pixels.
inline std::string line_charts_svg(
    const std::vector<Chart>& charts,
    int width = 1000,
    int height = 420) {
  static const char* const kColors[] = {
      "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  std::ostringstream svg;
  svg << std::setprecision(6);
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width
      << "\" height=\"" << height << "\" viewBox=\"0 0 " << width << " "
      << height << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  const double panel =
      static_cast<double>(width) / std::max<size_t>(1, charts.size());
  for (size_t c = 0; c < charts.size(); ++c) {
    const auto& chart = charts[c];
    // The plotting area of this panel.
    const double left = c * panel + 60, right = (c + 1) * panel - 20;
    const double top = 40, bottom = height - 50.0;
    double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
    double y_lo = x_lo, y_hi = -x_lo;
    for (const auto& s : chart.series) {
      for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
          x_lo = std::min(x_lo, s.x[i]);
          x_hi = std::max(x_hi, s.x[i]);
          y_lo = std::min(y_lo, s.y[i]);
          y_hi = std::max(y_hi, s.y[i]);
        }
      }
    }
    const auto xt = detail::nice_ticks(x_lo, x_hi);
    const auto yt = detail::nice_ticks(y_lo, y_hi);
    const auto px = [&](double x) {
      return left + (x - xt.lo) / (xt.hi - xt.lo) * (right - left);
    };
    const auto py = [&](double y) {
      return bottom - (y - yt.lo) / (yt.hi - yt.lo) * (bottom - top);
    };
    svg << "<text x=\"" << (left + right) / 2 << "\" y=\"24\" "
        << "text-anchor=\"middle\" font-size=\"15\">"
        << detail::xml_escaped(chart.title) << "</text>\n";
    svg << "<text x=\"" << (left + right) / 2 << "\" y=\"" << height - 12
        << "\" text-anchor=\"middle\">" << detail::xml_escaped(chart.x_label)
        << "</text>\n";
    for (double v = yt.lo; v <= yt.hi + yt.step * 1e-6; v += yt.step) {
      svg << "<line x1=\"" << left << "\" x2=\"" << right << "\" y1=\"" << py(v)
          << "\" y2=\"" << py(v) << "\" stroke=\"#ddd\"/>"
          << "<text x=\"" << left - 6 << "\" y=\"" << py(v) + 4
          << "\" text-anchor=\"end\">" << detail::tick_label(v, yt.step)
          << "</text>\n";
    }
    for (double v = xt.lo; v <= xt.hi + xt.step * 1e-6; v += xt.step) {
      svg << "<line x1=\"" << px(v) << "\" x2=\"" << px(v) << "\" y1=\""
          << bottom << "\" y2=\"" << bottom + 5 << "\" stroke=\"#333\"/>"
          << "<text x=\"" << px(v) << "\" y=\"" << bottom + 18
          << "\" text-anchor=\"middle\">" << detail::tick_label(v, xt.step)
          << "</text>\n";
    }
    svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\""
        << right - left << "\" height=\"" << bottom - top
        << "\" fill=\"none\" stroke=\"#333\"/>\n";
    for (size_t k = 0; k < chart.series.size(); ++k) {
      const auto& s = chart.series[k];
      const char* color = kColors[k % (sizeof(kColors) / sizeof(*kColors))];
      std::ostringstream points;
      points << std::setprecision(6);
      std::ostringstream marks;
      marks << std::setprecision(6);
      for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
        if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
          points << px(s.x[i]) << "," << py(s.y[i]) << " ";
          marks << "<circle cx=\"" << px(s.x[i]) << "\" cy=\"" << py(s.y[i])
                << "\" r=\"3\" fill=\"" << color << "\"/>";
        }
      }
      svg << "<polyline fill=\"none\" stroke=\"" << color
          << "\" stroke-width=\"2\" points=\"" << points.str() << "\"/>"
          << marks.str() << "\n";
      const double ly = top + 16 + 16 * static_cast<double>(k);
      svg << "<line x1=\"" << right - 90 << "\" x2=\"" << right - 70
          << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4 << "\" stroke=\""
          << color << "\" stroke-width=\"2\"/><text x=\"" << right - 64
          << "\" y=\"" << ly << "\">" << detail::xml_escaped(s.name)
          << "</text>\n";
    }
  }
  svg << "</svg>\n";
  return svg.str();
}

} // namespace resnet
