"""The settings window: each setting's value, where it comes from, and which ones IT locked.

Rules of this module (the desktop issue, § Start, settings precedence):

- One row per setting of `app.settings.SETTINGS`: a label with a mnemonic (the
  buddy of the setting's editor), an editor fitting the setting's type, and a
  line saying where the value in force comes from (`source_text`).
- A locked setting (`Resolved.locked`) shows its value read-only, with a lock
  icon and the words LOCKED, its editor disabled and its accessible
  description saying so; saving never writes it.
- A value from the command line or the environment can still be edited: what
  is saved is the person's own setting, which applies next time without the
  option or variable, and the line says the value is overridden now.
- Saving checks every changed setting first and stores nothing when one is
  wrong: each wrong value is shown next to its field and announced. Values are
  stored through `store_user_setting` only, so the rules of app/settings.py
  (types, locks) are the window's too.
- `theme_changed` is emitted when a stored theme takes effect now (not while the
  command line or the environment overrides it), so the app can repaint.
- Enter saves, Escape closes; Tab goes through every editor in order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from PySide6.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPixmap,
    QShowEvent,
    QStandardItem,
    QStandardItemModel,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from app.settings import (
    SETTINGS,
    Resolved,
    Setting,
    SettingLocked,
    Source,
    Theme,
    store_user_setting,
)
from app.ui.main_window import announce

LOCKED = "Locked by your administrator"
THEME_NAMES = {
    Theme.SYSTEM.value: "Follow the system",
    Theme.STANDARD.value: "Standard",
    Theme.HIGH_CONTRAST.value: "High contrast",
}
"""How the theme editor names each `Theme` value."""
RESERVED_MNEMONICS = frozenset("sbp")
"""&Save, &Browse... and the &problems list: no setting's label takes these letters."""
_SMALL_WORDS = frozenset({"the", "to", "in", "a", "an", "of", "are", "be", "is"})
ICON_SIZE = 16
_LATER = "what you save applies"
_OVERRIDING = (Source.COMMAND_LINE, Source.ENVIRONMENT)
"""Sources that beat the person's own setting while they are given."""
Group = QPalette.ColorGroup


def source_text(setting: Setting, source: Source, *, locked: bool) -> str:
    """Where the value of `setting` comes from, as its row says it."""
    words = {
        Source.COMMAND_LINE: f"from the command line ({setting.option})",
        Source.ENVIRONMENT: f"from the environment ({setting.environment})",
        Source.USER: "your setting",
        Source.MACHINE: "this machine's setting",
        Source.DEFAULT: "default",
    }[source]
    if locked:
        return f"{LOCKED}: {words}"
    if source is Source.COMMAND_LINE:
        return f"{words}: overridden now by {setting.option}; {_LATER} next time without it"
    if source is Source.ENVIRONMENT:
        return f"{words}: overridden now by {setting.environment}; {_LATER} when it is not set"
    return words


def label_with_mnemonic(description: str, taken: set[str]) -> str:
    """`description` capitalized, with `&` before a letter not in `taken` (which gets it):
    the first letter of a word that is not a small word, else any free letter."""
    text = description[:1].upper() + description[1:]
    starts = [i for i, ch in enumerate(text) if ch.isalpha() and (i == 0 or text[i - 1] == " ")]
    words = {i: text[i:].split(" ", 1)[0].lower() for i in starts}
    preferred = [i for i in starts if words[i] not in _SMALL_WORDS]
    others = [i for i, ch in enumerate(text) if ch.isalpha()]
    for i in preferred + others:
        letter = text[i].lower()
        if letter not in taken:
            taken.add(letter)
            return f"{text[:i]}&{text[i:]}"
    return text


def lock_pixmap(color: QColor, size: int, ratio: float = 1.0) -> QPixmap:
    """A padlock drawn in `color` (the palette's text colour: it reads in every theme)."""
    pixels = round(size * ratio)
    pixmap = QPixmap(pixels, pixels)
    pixmap.setDevicePixelRatio(ratio)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    pen = QPen(color, max(1.5, s / 9))
    painter.setPen(pen)
    painter.setBrush(Qt.BrushStyle.NoBrush)
    shackle = QPainterPath(QPointF(s * 0.3, s * 0.48))
    shackle.lineTo(s * 0.3, s * 0.32)
    shackle.arcTo(QRectF(s * 0.3, s * 0.08, s * 0.4, s * 0.46), 180, -180)
    shackle.lineTo(s * 0.7, s * 0.48)
    painter.drawPath(shackle)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(color)
    painter.drawRoundedRect(QRectF(s * 0.14, s * 0.44, s * 0.72, s * 0.52), s * 0.08, s * 0.08)
    painter.setCompositionMode(QPainter.CompositionMode.CompositionMode_Clear)
    painter.drawEllipse(QPointF(s * 0.5, s * 0.66), s * 0.08, s * 0.08)
    painter.drawRect(QRectF(s * 0.47, s * 0.68, s * 0.06, s * 0.16))
    painter.end()
    return pixmap


@dataclass(slots=True)
class SettingRow:
    """One setting's widgets in the window, and the value its editor started from."""

    setting: Setting
    label: QLabel
    editor: QLineEdit | QComboBox | QCheckBox
    source: QLabel
    lock: QLabel
    """The lock icon (shown for a locked setting only)."""
    error: QLabel
    error_icon: QLabel
    shown: Any
    """The value the editor showed when the window opened or was last saved."""
    locked: bool
    browse: QPushButton | None = None

    def value(self) -> Any:
        """What the editor holds now (text stripped; the theme's value; a bool)."""
        editor = self.editor
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QComboBox):
            return editor.currentData()
        return editor.text().strip()

    def changed(self) -> bool:
        return bool(self.value() != _shown_value(self.setting, self.shown))

    def show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.setVisible(bool(text))
        self.error_icon.setVisible(bool(text))
        self.editor.setAccessibleDescription(
            f"{text} {self.source.text()}" if text else self.source.text()
        )


def _shown_value(setting: Setting, value: Any) -> Any:
    """`value` as the editor of `setting` holds it (None text shows as empty)."""
    if setting.name == "work_offline":
        return bool(value)
    if setting.name == "theme":
        return value
    return "" if value is None else str(value)


class SettingsWindow(QDialog):
    """Every setting, where it comes from, and the person's own ones to change (module rules)."""

    message = Signal(str)
    """A one-line outcome of saving, for the main window's status bar."""
    theme_changed = Signal(str)
    """A `Theme` value, stored and in force now: the app repaints with it."""
    setting_stored = Signal(str, object)
    """A setting's name and the value stored for it (whether or not it is in force now)."""

    def __init__(self, resolved: Resolved, user_store: Any, parent: QWidget | None = None) -> None:
        """`user_store`: the person's settings as `store_user_setting` takes them (a
        QSettings or a dict)."""
        super().__init__(parent)
        self._resolved = resolved
        self._user_store = user_store
        self._announced_problems = False
        self.setObjectName("settings-window")
        self.setWindowTitle("Fleetgate settings")
        self.setAccessibleName("Fleetgate settings")
        self.setAccessibleDescription(
            "Your own settings; settings your administrator locked are shown but cannot be changed"
        )

        layout = QVBoxLayout(self)
        self.problems_model = QStandardItemModel(self)
        self.problems_label = QLabel("&Problems found (these values were not used):", self)
        self.problems_label.setObjectName("settings-problems-label")
        self.problems = QListView(self)
        self.problems.setObjectName("settings-problems")
        self.problems.setAccessibleName("Problems found in the settings")
        self.problems.setAccessibleDescription(
            "Values in the settings that were wrong and not used; the next source decided"
        )
        self.problems.setModel(self.problems_model)
        self.problems.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.problems.setWordWrap(True)
        self.problems_label.setBuddy(self.problems)
        warning = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for problem in resolved.problems:
            item = QStandardItem(warning, problem)
            item.setEditable(False)
            item.setToolTip(problem)
            self.problems_model.appendRow(item)
        lines = max(1, min(len(resolved.problems), 4))
        self.problems.setMaximumHeight(lines * (self.fontMetrics().height() + 8) + 8)
        self.problems_label.setVisible(bool(resolved.problems))
        self.problems.setVisible(bool(resolved.problems))
        layout.addWidget(self.problems_label)
        layout.addWidget(self.problems)

        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        grid.setHorizontalSpacing(10)
        self.rows: dict[str, SettingRow] = {}
        taken = set(RESERVED_MNEMONICS)
        for index, setting in enumerate(SETTINGS):
            row = self._row(setting, label_with_mnemonic(setting.description, taken))
            self.rows[setting.name] = row
            line = index * 3
            grid.addWidget(row.label, line, 0)
            if row.browse is None:
                grid.addWidget(row.editor, line, 1, 1, 2)
            else:
                grid.addWidget(row.editor, line, 1)
                grid.addWidget(row.browse, line, 2)
            grid.addLayout(self._icon_and_text(row.lock, row.source), line + 1, 1, 1, 2)
            grid.addLayout(self._icon_and_text(row.error_icon, row.error), line + 2, 1, 1, 2)
        layout.addLayout(grid)

        self.status = QLabel("", self)
        self.status.setObjectName("settings-status")
        self.status.setAccessibleName("Settings status")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

        buttons = QDialogButtonBox(self)
        self.save_button = QPushButton("&Save", self)
        self.save_button.setObjectName("settings-save")
        self.save_button.setAccessibleName("Save")
        self.save_button.setAccessibleDescription(
            "Store the settings you changed as your own; locked settings are never stored"
        )
        self.save_button.setDefault(True)
        self.close_button = QPushButton("Close", self)
        self.close_button.setObjectName("settings-close")
        self.close_button.setAccessibleName("Close")
        self.close_button.setAccessibleDescription("Close the settings without storing (Escape)")
        buttons.addButton(self.save_button, QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(self.close_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.save_button.clicked.connect(self.save)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(buttons)

        self.folder_dialog: QFileDialog | None = None
        self._paint_icons()
        self._chain_tab_order()
        first = next((r.editor for r in self.rows.values() if not r.locked), None)
        if first is not None:
            first.setFocus()
        # 120 characters wide (720 pixels at the default text size): it grows with the
        # system's text size, and is as high as its wrapped labels need at that width.
        width = max(self.minimumSizeHint().width(), self.fontMetrics().averageCharWidth() * 120)
        self.resize(width, max(self.sizeHint().height(), self.heightForWidth(width)))

    # --- building the rows ----------------------------------------------------------------

    def _row(self, setting: Setting, label_text: str) -> SettingRow:
        name = setting.description[:1].upper() + setting.description[1:]
        locked = not self._resolved.may_change(setting.name)
        value = self._resolved.values[setting.name]
        editor: QLineEdit | QComboBox | QCheckBox
        if setting.name == "theme":
            combo = QComboBox(self)
            for theme in Theme:
                combo.addItem(THEME_NAMES.get(theme.value, theme.value), theme.value)
            combo.setCurrentIndex(max(0, combo.findData(value)))
            editor = combo
        elif setting.name == "work_offline":
            check = QCheckBox(self)
            check.setChecked(bool(value))
            editor = check
        else:
            field = QLineEdit(_shown_value(setting, value), self)
            field.setPlaceholderText("not set")
            field.setReadOnly(locked)
            field.setClearButtonEnabled(not locked)
            editor = field
        editor.setObjectName(f"setting-{setting.name.replace('_', '-')}")
        editor.setAccessibleName(name)
        editor.setEnabled(not locked)
        label = QLabel(f"{label_text}:", self)
        label.setObjectName(f"setting-{setting.name.replace('_', '-')}-label")
        label.setBuddy(editor)

        lock = QLabel(self)
        lock.setObjectName(f"setting-{setting.name.replace('_', '-')}-lock")
        lock.setAccessibleName(LOCKED)
        lock.setToolTip(LOCKED)
        lock.setVisible(locked)
        source = QLabel(self)
        source.setObjectName(f"setting-{setting.name.replace('_', '-')}-source")
        source.setAccessibleName(f"Where {setting.description} comes from")
        source.setWordWrap(True)
        error_icon = QLabel(self)
        error_icon.setAccessibleName("Not saved")
        error_icon.setVisible(False)
        error = QLabel(self)
        error.setObjectName(f"setting-{setting.name.replace('_', '-')}-error")
        error.setAccessibleName(f"Problem with {setting.description}")
        error.setWordWrap(True)
        error.setVisible(False)
        row = SettingRow(setting, label, editor, source, lock, error, error_icon, value, locked)
        if setting.name == "replica_dir":
            browse = QPushButton("&Browse...", self)
            browse.setObjectName("setting-replica-dir-browse")
            browse.setAccessibleName("Browse for the replica folder")
            browse.setAccessibleDescription(
                "Choose the folder where the encrypted replicas are kept"
            )
            browse.setAutoDefault(False)  # Enter still saves
            browse.setEnabled(not locked)
            browse.clicked.connect(self.browse_for_folder)
            row.browse = browse
        self._show_source(row, self._resolved.sources[setting.name])
        return row

    def _icon_and_text(self, icon: QLabel, text: QLabel) -> QHBoxLayout:
        line = QHBoxLayout()
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(icon, 0, Qt.AlignmentFlag.AlignTop)
        line.addWidget(text, 1)
        return line

    def _show_source(self, row: SettingRow, source: Source) -> None:
        text = source_text(row.setting, source, locked=row.locked)
        row.source.setText(text)
        if row.locked:
            row.editor.setAccessibleDescription(f"{text}. You cannot change it here.")
        else:
            row.show_error("" if row.error.isHidden() else row.error.text())

    def _chain_tab_order(self) -> None:
        chain: list[QWidget] = [self.problems] if self._resolved.problems else []
        for row in self.rows.values():
            chain.append(row.editor)
            if row.browse is not None:
                chain.append(row.browse)
        chain += [self.save_button, self.close_button]
        for before, after in pairwise(chain):
            self.setTabOrder(before, after)

    def _paint_icons(self) -> None:
        color = self.palette().color(QPalette.ColorRole.WindowText)
        pixmap = lock_pixmap(color, ICON_SIZE, self.devicePixelRatioF())
        error = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        for row in self.rows.values():
            row.lock.setPixmap(pixmap)
            row.error_icon.setPixmap(error.pixmap(ICON_SIZE, ICON_SIZE))
            if isinstance(row.editor, QCheckBox):
                # Fusion outlines a check box in the window colour darkened, which is
                # black on black in high contrast: outline it in the text colour instead.
                own = QPalette()  # the application's, with only this role set
                for group in (Group.Active, Group.Inactive, Group.Disabled):
                    text = self.palette().color(group, QPalette.ColorRole.WindowText)
                    own.setColor(group, QPalette.ColorRole.Window, text)
                row.editor.setPalette(own)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._paint_icons()  # the lock is drawn in the text colour of the theme in force

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self._resolved.problems and not self._announced_problems:
            self._announced_problems = True
            count = len(self._resolved.problems)
            plural = "s" if count != 1 else ""
            announce(
                self.problems, f"{count} problem{plural} found in the settings, listed at the top"
            )

    # --- what the person does -------------------------------------------------------------

    @property
    def resolved(self) -> Resolved:
        """The settings as they stand after what was saved here (sources included)."""
        return self._resolved

    def browse_for_folder(self) -> None:
        """Open a folder chooser (not blocking) for where the replicas are kept."""
        row = self.rows["replica_dir"]
        dialog = QFileDialog(self, "Where the encrypted replicas are kept", row.value())
        dialog.setObjectName("replica-folder-dialog")
        dialog.setAccessibleName("Choose the replica folder")
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
        dialog.fileSelected.connect(self._folder_chosen)
        self.folder_dialog = dialog
        dialog.open()

    def _folder_chosen(self, folder: str) -> None:
        row = self.rows["replica_dir"]
        if folder and isinstance(row.editor, QLineEdit):
            row.editor.setText(folder)
            row.editor.setFocus()

    def save(self) -> None:
        """Store each changed, unlocked setting as the person's own; store nothing when one
        of them is wrong (each wrong one says why next to its field)."""
        changed = [r for r in self.rows.values() if not r.locked and r.changed()]
        wrong: list[SettingRow] = []
        for row in self.rows.values():
            row.show_error("")
        for row in changed:
            try:
                row.setting.read(row.value())
            except ValueError as error:
                self._refuse(row, f"Not saved: {row.setting.description} {error}.")
                wrong.append(row)
        if wrong:
            self._say(f"Nothing saved: correct {self._describe(wrong)} first.", announce_it=False)
            wrong[0].editor.setFocus()
            return
        if not changed:
            self._say("Nothing changed, nothing saved.")
            return
        stored: list[SettingRow] = []
        for row in changed:
            try:
                value = store_user_setting(self._resolved, row.setting.name, row.value(),
                                           self._user_store)  # fmt: skip
            except (ValueError, SettingLocked) as error:
                self._refuse(row, f"Not saved: {error}.")
                wrong.append(row)
                continue
            stored.append(row)
            self._stored(row, value)
        text = f"Saved {self._describe(stored)}." if stored else "Nothing saved."
        overridden = [r for r in stored if self._resolved.sources[r.setting.name] in _OVERRIDING]
        if overridden:
            text += f" Overridden now: {self._describe(overridden)}; saved for next time."
        if wrong:
            text += f" Not saved: {self._describe(wrong)}."
        self._say(text)

    def _stored(self, row: SettingRow, value: Any) -> None:
        name = row.setting.name
        row.shown = value
        source = self._resolved.sources[name]
        in_force = source not in _OVERRIDING
        if in_force:
            self._resolved = replace(
                self._resolved,
                values={**self._resolved.values, name: value},
                sources={**self._resolved.sources, name: Source.USER},
            )
            self._show_source(row, Source.USER)
        self.setting_stored.emit(name, value)
        if name == "theme" and in_force:
            self.theme_changed.emit(str(value))

    def _refuse(self, row: SettingRow, text: str) -> None:
        row.show_error(text)
        announce(row.error, text)

    def _say(self, text: str, *, announce_it: bool = True) -> None:
        self.status.setText(text)
        if announce_it:
            announce(self.status, text)
        self.message.emit(text)

    @staticmethod
    def _describe(rows: list[SettingRow]) -> str:
        names = [r.setting.description for r in rows]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
