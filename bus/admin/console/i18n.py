"""The console's message catalogue: Vietnamese first, English as the switch.

One template per page, every visible word looked up here by key (``_('ov.broker')``);
values may name ``{placeholders}`` filled from the template. A key missing from a
language falls back to Vietnamese, then to the key itself (a unit test keeps both
languages complete for every key the templates use).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CATALOGUE", "LANGUAGES", "translate"]

LANGUAGES: Final = ("vi", "en")

_PAIRS: Final[dict[str, tuple[str, str]]] = {
    "app": ("LGSP — bảng điều khiển vận hành", "LGSP — operators' console"),
    "page.overview": ("Tổng quan", "Overview"),
    "page.services": ("Dịch vụ và quyền truy cập", "Services and access"),
    "page.deadletters": ("Thư chết (DLQ)", "Dead letters"),
    "page.letter": ("Chi tiết thư chết", "Dead letter"),
    "page.act": ("Xác nhận thao tác", "Confirm"),
    "page.audit": ("Nhật ký kiểm toán", "Audit"),
    "page.search": ("Nhật ký kiểm toán", "Audit"),
    "page.verify": ("Nhật ký kiểm toán", "Audit"),
    "page.config": ("Cấu hình", "Config"),
    "page.check": ("Cấu hình", "Config"),
    "page.login": ("Đăng nhập", "Log in"),
    "page.error": ("Lỗi", "Error"),
    "role.viewer": ("người xem", "viewer"),
    "role.operator": ("vận hành viên", "operator"),
    "role.auditor": ("kiểm toán viên", "auditor"),
    "logout": ("Đăng xuất", "Log out"),
    "none": ("không có", "none"),
    "off": ("tắt", "off"),
    "cancel": ("Hủy", "Cancel"),
    "service": ("Dịch vụ", "Service"),
    "operation": ("Thao tác", "Operation"),
    "upstream": ("Hệ thống nguồn", "Upstream"),
    "consumer": ("Hệ thống gọi", "Consumer"),
    "breaker": ("Cầu dao", "Breaker"),
    "breaker.closed": ("đóng (bình thường)", "closed (normal)"),
    "breaker.open": ("mở (chặn gọi)", "open (failing fast)"),
    "breaker.half_open": ("nửa mở (thử lại)", "half open (probing)"),
    "breaker.unknown": ("không rõ", "unknown"),
    "error.hint": ("Quay lại trang trước hoặc tải lại trang.", "Go back or reload the page."),
    "login.key": ("Khóa quản trị", "Admin key"),
    "login.submit": ("Đăng nhập", "Log in"),
    "login.failed": ("Khóa không hợp lệ hoặc biểu mẫu đã cũ.", "Invalid key or stale form."),
    "login.hint": (
        "Phiên làm việc hết hạn sau một thời gian không dùng; khóa không bao giờ được lưu "
        "trong trình duyệt.",
        "The session ends after a while unused; the key is never kept in the browser.",
    ),
    "ov.broker": ("Hàng đợi (RabbitMQ)", "Broker"),
    "ov.connected": ("đã kết nối", "connected"),
    "ov.disconnected": ("mất kết nối", "disconnected"),
    "ov.store": ("Kho dữ liệu", "Store"),
    "ov.reachable": ("hoạt động", "reachable"),
    "ov.unreachable": ("không truy cập được", "unreachable"),
    "ov.audit": ("Ghi nhật ký kiểm toán", "Audit writer"),
    "ov.rate_limit": ("Giới hạn tần suất", "Rate limits"),
    "ov.rl_process": ("riêng từng cổng (mỗi tiến trình)", "per gateway process"),
    "ov.rl_redis": ("chung mọi cổng (Redis)", "shared by every gateway (Redis)"),
    "ov.rl_fallback": (
        "Redis không truy cập được: tạm dùng giới hạn riêng từng cổng",
        "Redis unreachable: per-process limits meanwhile",
    ),
    "ov.backlog": ("chờ ghi", "backlog"),
    "ov.written": ("đã ghi", "written"),
    "ov.config": ("Cấu hình", "Config"),
    "ov.version": ("Phiên bản", "Version"),
    "ov.loaded": ("áp dụng lúc", "in force since"),
    "ov.last_reload": ("Lần nạp lại gần nhất", "Last reload"),
    "ov.traffic": ("Lưu lượng một giờ qua", "Traffic, last hour"),
    "ov.chart": ("Biểu đồ", "Chart"),
    "ov.chart_label": ("Lưu lượng của {service}", "Traffic of {service}"),
    "ov.chart_hint": (
        "Mỗi cột là một phút: chiều cao là số yêu cầu, phần đỏ là lỗi máy chủ (5xx); cột "
        "cuối là phút hiện tại. Số liệu của tiến trình này kể từ khi khởi động.",
        "One bar per minute: its height the requests, its red part server errors (5xx); "
        "the last bar is the minute under way. This process's counts since it started.",
    ),
    "ov.requests": ("Yêu cầu", "Requests"),
    "ov.errors": ("Lỗi 5xx", "5xx errors"),
    "ov.queue": ("Hàng đợi / DLQ", "Queued / DLQ"),
    "sv.services": ("Dịch vụ và thao tác", "Services and operations"),
    "sv.timeout": ("Thời hạn", "Timeout"),
    "sv.retry": ("Thử lại", "Retry"),
    "sv.attempts": ("{n} lần", "{n} attempts"),
    "sv.not_idempotent": ("không lặp an toàn", "not idempotent"),
    "sv.breaker": (
        "mở khi lỗi ≥ {ratio} trong {window} s, {open} s",
        "opens at ≥ {ratio} failures in {window} s, for {open} s",
    ),
    "sv.audit": ("Kiểm toán", "Audit"),
    "sv.personal": ("dữ liệu cá nhân", "personal data"),
    "sv.grants": ("Ma trận quyền", "Grant matrix"),
    "sv.consumers": ("Hệ thống gọi: khóa, giới hạn, sử dụng", "Consumers: keys, limits, usage"),
    "sv.credentials": ("Khóa / chứng thư", "Keys / certificates"),
    "sv.expires": ("hết hạn", "expires"),
    "sv.fields": ("Trường được cấp", "Field grants"),
    "sv.sensitive": ("nhạy cảm", "sensitive"),
    "sv.rate": ("Giới hạn tốc độ", "Rate limit"),
    "sv.usage": ("Yêu cầu từ khi khởi động", "Requests since start"),
    "key.valid": ("còn hiệu lực", "valid"),
    "key.expiring": ("sắp hết hạn", "expiring soon"),
    "key.expired": ("đã hết hạn", "expired"),
    "dl.none": ("Không có thư chết.", "No dead letters."),
    "dl.reason": ("Lý do", "Reason"),
    "dl.attempts": ("Số lần", "Attempts"),
    "dl.when": ("Thời điểm", "When"),
    "dl.request": ("Mã yêu cầu", "Request id"),
    "dl.error": ("Lỗi cuối", "Last error"),
    "dl.inspect": ("Xem", "Inspect"),
    "dl.replay": ("Gửi lại các thư đã chọn", "Replay selected"),
    "dl.purge": ("Xóa các thư đã chọn", "Purge selected"),
    "dl.confirm_replay": (
        "Gửi lại {n} thư chết của {service}?",
        "Replay {n} dead letter(s) of {service}?",
    ),
    "dl.confirm_purge": (
        "Xóa vĩnh viễn {n} thư chết của {service}?",
        "Delete {n} dead letter(s) of {service} for good?",
    ),
    "dl.yes_replay": ("Xác nhận gửi lại", "Yes, replay"),
    "dl.yes_purge": ("Xác nhận xóa", "Yes, purge"),
    "dl.gone": ("Các thư đã chọn không còn trong DLQ.", "The chosen letters are no longer there."),
    "dl.replayed": ("Kết quả gửi lại", "Replayed"),
    "dl.left": ("đã rời DLQ", "left the DLQ"),
    "dl.purged": ("Đã xóa {n} thư.", "Purged {n} letter(s)."),
    "dl.masked": ("Dữ liệu cá nhân đã được che.", "Personal data is masked."),
    "dl.revealed": (
        "Dữ liệu cá nhân đang hiển thị (đã ghi nhật ký kiểm toán).",
        "Personal data shown (recorded in the audit trail).",
    ),
    "dl.reveal": ("Hiện dữ liệu cá nhân", "Reveal personal data"),
    "dl.reveal_hint": ("Việc xem được ghi vào nhật ký.", "The reveal is audited."),
    "dl.body": ("Nội dung", "Body"),
    "dl.headers": ("Tiêu đề", "Headers"),
    "au.chains": ("Chuỗi băm", "Hash chains"),
    "au.intact": ("Toàn vẹn", "Intact"),
    "au.broken": ("PHÁT HIỆN SAI LỆCH", "TAMPERING FOUND"),
    "au.not_verified": ("Chưa kiểm tra trong phiên này.", "Not verified yet in this process."),
    "au.verify": ("Kiểm tra chuỗi", "Verify chains"),
    "au.subject": ("Số định danh công dân", "Citizen ID number"),
    "au.officer": ("Cán bộ", "Officer"),
    "au.from": ("Từ ngày", "From"),
    "au.to": ("Đến ngày", "To"),
    "au.search": ("Tìm", "Search"),
    "au.found": ("{n} bản ghi", "{n} record(s)"),
    "au.truncated": (
        "Kết quả có thể chưa đủ: hãy thu hẹp khoảng thời gian.",
        "Results may be incomplete: narrow the time range.",
    ),
    "au.kind": ("Loại", "Kind"),
    "au.purpose": ("Thủ tục · hồ sơ · căn cứ", "Procedure · dossier · basis"),
    "au.outcome": ("Kết quả", "Outcome"),
    "au.evidence": ("Tải bằng chứng", "Evidence"),
    "cf.running": ("routing.yaml đang chạy", "routing.yaml in force"),
    "cf.propose": ("Đề xuất cấu hình mới", "Propose a config"),
    "cf.upload": ("Tải tệp lên", "Upload a file"),
    "cf.check": ("Kiểm tra và so sánh", "Validate and diff"),
    "cf.errors": ("{n} lỗi", "{n} error(s)"),
    "cf.where": ("Dòng:cột", "Line:column"),
    "cf.path": ("Đường dẫn", "Path"),
    "cf.message": ("Thông báo", "Message"),
    "cf.valid": ("Hợp lệ", "Valid"),
    "cf.warnings": ("Cảnh báo", "Warnings"),
    "cf.diff": (
        "Thay đổi (quyền bị thu hồi/cấp thêm trước)",
        "Changes (grants revoked/added first)",
    ),
    "cf.no_change": ("Không có thay đổi về nội dung.", "No change in meaning."),
    "cf.restart": ("Chỉ có hiệu lực sau khi khởi động lại", "Takes effect only after a restart"),
    "cf.apply": ("Áp dụng (nạp lại)", "Apply (reload)"),
    "cf.applied": ("Đã áp dụng", "Applied"),
    "cf.proposed": ("Cấu hình đề xuất", "Proposed config"),
}

CATALOGUE: Final[dict[str, dict[str, str]]] = {
    lang: {key: pair[i] for key, pair in _PAIRS.items()} for i, lang in enumerate(LANGUAGES)
}


def translate(lang: str, key: str, **values: Any) -> str:
    """The message ``key`` in ``lang`` with ``values`` filled in."""
    text = CATALOGUE.get(lang, {}).get(key) or CATALOGUE["vi"].get(key) or key
    return text.format(**values) if values else text
