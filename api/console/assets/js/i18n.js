// Every label of the console in Simplified Chinese (the default) and English. Dates and
// numbers go through Intl in the chosen locale. The choice is kept in localStorage.

const STRINGS = {
  "zh-CN": {
    "brand": "明亮",
    "title": "明亮 · 监管控制台",
    "nav.alerts": "告警", "nav.sites": "单位", "nav.wall": "视频墙",
    "signout": "退出", "lang.switch": "English",
    "signin.title": "登录监管控制台",
    "signin.token": "访问令牌",
    "signin.hint": "请输入管理员为您创建的令牌（mlt_ 开头）。",
    "signin.submit": "登录",
    "signin.ended": "已退出登录。",
    "signin.expired": "会话已过期或已结束，请重新登录。",
    "role.admin": "管理员", "role.supervisor": "监管员", "role.viewer": "查看员",
    "counts.open": "未处理告警",
    "alerts.title": "告警",
    "alerts.live": "实时", "alerts.reconnecting": "正在重新连接…",
    "alerts.none": "没有符合条件的告警。",
    "alerts.more": "加载更多",
    "alerts.new": "新告警",
    "filter.site": "单位", "filter.kind": "类型", "filter.category": "类别",
    "filter.severity": "级别", "filter.status": "状态", "filter.any": "全部",
    "filter.unresolved": "未解决",
    "col.when": "首次发生", "col.what": "告警", "col.where": "地点", "col.severity": "级别",
    "col.status": "状态", "col.count": "次数", "col.last": "最近发生",
    "alert.title": "告警 #{id}",
    "alert.what": "内容", "alert.where": "地点", "alert.device": "设备",
    "alert.first": "首次发生", "alert.last": "最近发生", "alert.ended": "条件结束",
    "alert.count": "发生次数", "alert.rule": "规则", "alert.assignee": "处理人",
    "alert.case": "案件状态", "alert.details": "详情",
    "alert.evidence": "证据", "alert.snapshot": "抓拍", "alert.clip": "视频片段",
    "alert.clip.pending": "视频片段仍在录制，稍后刷新。",
    "alert.evidence.missing": "证据已不再保存。",
    "alert.telemetry": "告警前后的设备数据",
    "alert.telemetry.none": "告警前后没有该设备的数据。",
    "alert.history": "处理记录", "alert.comments": "评论",
    "alert.comments.none": "暂无评论。",
    "alert.note": "备注（可选）",
    "alert.comment.placeholder": "写评论…", "alert.comment.send": "发表评论",
    "alert.assign.placeholder": "处理人姓名", "alert.assign.send": "指派",
    "alert.refused": "操作被拒绝：{reason}",
    "alert.cannot.act": "您的角色只能查看此告警。",
    "alert.back": "返回告警列表",
    "sites.title": "单位目录", "sites.search": "按名称或编号搜索",
    "sites.kitchens": "明厨亮灶", "sites.grids": "街道网格",
    "sites.none": "没有匹配的单位。",
    "col.site": "单位", "col.id": "编号", "col.online": "在线", "col.seen": "最近上报",
    "col.open": "未处理告警", "col.address": "地址",
    "online.yes": "在线", "online.no": "离线", "seen.never": "从未",
    "site.sensors": "传感器", "site.cameras": "摄像头", "site.alerts": "未处理告警",
    "site.hours": "营业时间", "site.range": "时间范围",
    "site.range.1h": "1 小时", "site.range.6h": "6 小时", "site.range.24h": "24 小时",
    "site.nodata": "该时段没有数据。",
    "site.wall": "在视频墙查看",
    "wall.title": "视频墙", "wall.site": "单位", "wall.all": "全部可见摄像头",
    "wall.none": "没有可见的摄像头。", "wall.more": "另有 {n} 路未显示，请选择单位。",
    "wall.open": "点击观看实时画面",
    "live.title": "实时画面", "live.connecting": "正在连接…", "live.playing": "正在播放",
    "live.failed": "无法播放：{reason}", "live.ended": "已断开。", "live.back": "返回",
    "live.retry": "重试",
    "error.network": "无法连接服务器。",
    "error.forbidden": "无权访问：{reason}",
    "error.notfound": "找不到：{reason}",
    "critical.banner": "紧急告警：{what}（{where}）",
    "critical.dismiss": "知道了",
    "yes": "是", "no": "否", "unknown": "未知",
  },
  en: {
    "brand": "Mingliang",
    "title": "Mingliang · Supervision console",
    "nav.alerts": "Alerts", "nav.sites": "Sites", "nav.wall": "Video wall",
    "signout": "Sign out", "lang.switch": "中文",
    "signin.title": "Sign in to the supervision console",
    "signin.token": "Access token",
    "signin.hint": "Enter the token an administrator created for you (it starts with mlt_).",
    "signin.submit": "Sign in",
    "signin.ended": "You have signed out.",
    "signin.expired": "Your session expired or was ended; please sign in again.",
    "role.admin": "administrator", "role.supervisor": "supervisor", "role.viewer": "viewer",
    "counts.open": "Unresolved alerts",
    "alerts.title": "Alerts",
    "alerts.live": "Live", "alerts.reconnecting": "Reconnecting…",
    "alerts.none": "No alerts match.",
    "alerts.more": "Load more",
    "alerts.new": "New alert",
    "filter.site": "Site", "filter.kind": "Kind", "filter.category": "Category",
    "filter.severity": "Severity", "filter.status": "Status", "filter.any": "Any",
    "filter.unresolved": "Unresolved",
    "col.when": "First seen", "col.what": "Alert", "col.where": "Where", "col.severity": "Severity",
    "col.status": "Status", "col.count": "Count", "col.last": "Last seen",
    "alert.title": "Alert #{id}",
    "alert.what": "What", "alert.where": "Where", "alert.device": "Device",
    "alert.first": "First seen", "alert.last": "Last seen", "alert.ended": "Condition ended",
    "alert.count": "Times seen", "alert.rule": "Rule", "alert.assignee": "Assignee",
    "alert.case": "Case", "alert.details": "Details",
    "alert.evidence": "Evidence", "alert.snapshot": "Snapshot", "alert.clip": "Clip",
    "alert.clip.pending": "The clip is still being recorded; refresh shortly.",
    "alert.evidence.missing": "The evidence is no longer kept.",
    "alert.telemetry": "The device's readings around the alert",
    "alert.telemetry.none": "No readings of this device around the alert.",
    "alert.history": "History", "alert.comments": "Comments",
    "alert.comments.none": "No comments yet.",
    "alert.note": "Note (optional)",
    "alert.comment.placeholder": "Write a comment…", "alert.comment.send": "Comment",
    "alert.assign.placeholder": "Name of the assignee", "alert.assign.send": "Assign",
    "alert.refused": "Refused: {reason}",
    "alert.cannot.act": "Your role may only view this alert.",
    "alert.back": "Back to the alerts",
    "sites.title": "Directory", "sites.search": "Search by name or id",
    "sites.kitchens": "Kitchens", "sites.grids": "Street grids",
    "sites.none": "No site matches.",
    "col.site": "Site", "col.id": "Id", "col.online": "Online", "col.seen": "Last reported",
    "col.open": "Unresolved alerts", "col.address": "Address",
    "online.yes": "online", "online.no": "offline", "seen.never": "never",
    "site.sensors": "Sensors", "site.cameras": "Cameras", "site.alerts": "Unresolved alerts",
    "site.hours": "Opening hours", "site.range": "Range",
    "site.range.1h": "1 hour", "site.range.6h": "6 hours", "site.range.24h": "24 hours",
    "site.nodata": "No readings in this range.",
    "site.wall": "Show on the video wall",
    "wall.title": "Video wall", "wall.site": "Site", "wall.all": "All cameras I may see",
    "wall.none": "No cameras to show.", "wall.more": "{n} more not shown: choose a site.",
    "wall.open": "Click to watch live",
    "live.title": "Live view", "live.connecting": "Connecting…", "live.playing": "Playing",
    "live.failed": "Cannot play: {reason}", "live.ended": "Disconnected.", "live.back": "Back",
    "live.retry": "Retry",
    "error.network": "Cannot reach the server.",
    "error.forbidden": "Not allowed: {reason}",
    "error.notfound": "Not found: {reason}",
    "critical.banner": "Critical alert: {what} ({where})",
    "critical.dismiss": "Dismiss",
    "yes": "yes", "no": "no", "unknown": "unknown",
  },
};

// Enumerations of the API, by value.
const TERMS = {
  "zh-CN": {
    kind: {
      rodent: "鼠患", cat_dog: "猫狗进入", smoking: "吸烟", bin_lid_open: "垃圾桶未盖",
      flame_unattended: "灶火无人看管", fire_outside_stove: "灶台外明火",
      after_hours_presence: "非营业时间有人", phone_use: "玩手机", no_gloves: "未戴手套",
      no_hat: "未戴厨师帽", no_mask: "未戴口罩", no_work_clothes: "未穿工作服",
      street_vending: "占道经营", exposed_garbage: "暴露垃圾", piled_materials: "乱堆物料",
      illegal_parking: "违规停车", standing_water: "道路积水", crowding: "人员聚集",
      camera_offline: "摄像头离线", camera_covered: "摄像头遮挡", camera_blurred: "画面模糊",
      camera_frozen: "画面冻结", camera_moved: "摄像头移位",
      cold_chain_temperature: "冷链温度异常", gas_leak: "燃气泄漏", smoke: "烟雾报警",
      door_left_open: "门未关闭", door_open_after_hours: "非营业时间开门",
      disinfection_fault: "消毒设备异常", device_offline: "设备离线",
      sensor_flatline: "传感器读数不变", rapid_change: "读数突变", device_fault: "设备故障",
    },
    category: { kitchen: "明厨亮灶", street: "城市管理", camera_health: "摄像头健康", sensor: "传感器" },
    severity: { critical: "紧急", major: "重要", minor: "一般", warning: "提示" },
    status: { open: "待处理", acknowledged: "已确认", resolved: "已解决" },
    case: {
      collected: "已采集", filed: "已立案", dispatched: "已派遣", handled: "已处置",
      verified: "已核查", closed: "已结案", cancelled: "已作废",
    },
    action: {
      acknowledge: "确认", resolve: "解决", file: "立案", dispatch: "派遣", handle: "处置",
      verify: "核查", close: "结案", cancel: "作废",
    },
    change: {
      created: "触发", repeated: "再次发生", cleared: "自动恢复", ended: "条件结束",
      acknowledged: "确认", resolved: "解决", filed: "立案", dispatched: "派遣",
      handled: "处置", verified: "核查", closed: "结案", cancelled: "作废",
      assigned: "指派", commented: "评论", reminded: "提醒", escalated: "升级",
    },
    sitekind: { kitchen: "明厨亮灶", street_grid: "街道网格" },
  },
  en: {
    kind: {
      rodent: "Rodent", cat_dog: "Cat or dog", smoking: "Smoking", bin_lid_open: "Bin lid open",
      flame_unattended: "Flame unattended", fire_outside_stove: "Fire outside the stove",
      after_hours_presence: "Presence after hours", phone_use: "Phone use",
      no_gloves: "No gloves", no_hat: "No hat", no_mask: "No mask",
      no_work_clothes: "No work clothes", street_vending: "Street vending",
      exposed_garbage: "Exposed garbage", piled_materials: "Piled materials",
      illegal_parking: "Illegal parking", standing_water: "Standing water", crowding: "Crowding",
      camera_offline: "Camera offline", camera_covered: "Camera covered",
      camera_blurred: "Camera blurred", camera_frozen: "Picture frozen",
      camera_moved: "Camera moved", cold_chain_temperature: "Cold-chain temperature",
      gas_leak: "Gas leak", smoke: "Smoke", door_left_open: "Door left open",
      door_open_after_hours: "Door open after hours", disinfection_fault: "Disinfection fault",
      device_offline: "Device offline", sensor_flatline: "Sensor flat-lined",
      rapid_change: "Rapid change", device_fault: "Device fault",
    },
    category: { kitchen: "Kitchen", street: "Street", camera_health: "Camera health", sensor: "Sensor" },
    severity: { critical: "critical", major: "major", minor: "minor", warning: "warning" },
    status: { open: "open", acknowledged: "acknowledged", resolved: "resolved" },
    case: {
      collected: "collected", filed: "filed", dispatched: "dispatched", handled: "handled",
      verified: "verified", closed: "closed", cancelled: "cancelled",
    },
    action: {
      acknowledge: "Acknowledge", resolve: "Resolve", file: "File", dispatch: "Dispatch",
      handle: "Handled", verify: "Verify", close: "Close", cancel: "Cancel case",
    },
    change: {
      created: "raised", repeated: "seen again", cleared: "cleared", ended: "condition ended",
      acknowledged: "acknowledged", resolved: "resolved", filed: "filed",
      dispatched: "dispatched", handled: "handled", verified: "verified", closed: "closed",
      cancelled: "cancelled", assigned: "assigned", commented: "commented",
      reminded: "reminded", escalated: "escalated",
    },
    sitekind: { kitchen: "Kitchen", street_grid: "Street grid" },
  },
};

export const LOCALES = Object.keys(STRINGS);
const KEY = "mingliang.lang";
let current = LOCALES.includes(localStorage.getItem(KEY)) ? localStorage.getItem(KEY) : "zh-CN";

export function lang() { return current; }

export function setLang(locale) {
  current = LOCALES.includes(locale) ? locale : "zh-CN";
  localStorage.setItem(KEY, current);
  document.documentElement.lang = current;
  document.title = t("title");
}

export function t(key, vars = {}) {
  const text = STRINGS[current][key] ?? STRINGS["zh-CN"][key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

// A term of the API (kind, severity, status...) in the current language; unknown values as is.
export function term(group, value) {
  if (value === null || value === undefined) return "";
  return TERMS[current][group]?.[value] ?? String(value);
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Intl.DateTimeFormat(current, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(ms));
}

export function fmtClock(ms) {
  return new Intl.DateTimeFormat(current, { hour: "2-digit", minute: "2-digit", hour12: false })
    .format(new Date(ms));
}

export function fmtNumber(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  const options = digits === undefined ? {} : { maximumFractionDigits: digits };
  return new Intl.NumberFormat(current, options).format(n);
}

// "5 minutes ago" in the locale's words.
export function fmtAgo(ms) {
  if (ms === null || ms === undefined) return t("seen.never");
  const seconds = Math.round((ms - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(current, { numeric: "auto" });
  const abs = Math.abs(seconds);
  if (abs < 60) return rtf.format(seconds, "second");
  if (abs < 3600) return rtf.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(seconds / 3600), "hour");
  return rtf.format(Math.round(seconds / 86400), "day");
}

// Fill the static labels of the page (elements with data-t).
export function translateStatic(root = document) {
  for (const el of root.querySelectorAll("[data-t]")) el.textContent = t(el.dataset.t);
}
