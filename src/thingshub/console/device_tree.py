"""The sub-devices card of a device page: the tree of devices reached through this
one, each with its address, presence and last activity, linking to its page.

Rules (the tree's own are tree.py's):
- Shown when the device has sub-devices, and from the moment it gets one.
- Loads go through the topology service's keyset pages of PAGE_SIZE
  children with their presence (as `GET .../sub-devices` answers), plus one
  probe of a child page per child shown, to know which children are
  gateways themselves. A gateway of 1,500 children costs a page at a time.
- Live: the page's feed hands over presence and topology events of the
  devices shown (tree.py decides what they change); last activity is
  refreshed on the page's tick for the devices shown.
"""

from __future__ import annotations

from typing import Final

from nicegui import events, ui

from thingshub.console import fmt
from thingshub.console.auth import current
from thingshub.console.context import ConsoleContext
from thingshub.console.layout import MOUNT, card, column, table, tid
from thingshub.console.tree import Child, Key, SubTree, key_of
from thingshub.core.errors import NotFound, ThingsHubError
from thingshub.core.events import Event
from thingshub.core.model import Device

#: Children loaded per page of one gateway.
PAGE_SIZE: Final = 50
#: Rows a tree may show before its gateways stay folded at first sight.
OPEN_BUDGET: Final = 50

COLUMNS: Final = [
    column("name", "Device"),
    column("product_id", "Product"),
    column("sub_address", "Address"),
    column("status", "Status"),
    column("activity", "Last activity"),
]

NAME_SLOT: Final = f"""<q-td :props="props">
  <div class="row items-center no-wrap" :data-depth="props.row.depth"
       :style="'padding-left: ' + (props.row.depth - 1) * 1.5 + 'rem'">
    <q-btn v-if="props.row.more" flat dense no-caps size="sm" color="primary"
           icon="expand_more" :label="props.row.label"
           :data-testid="'tree-more-' + props.row.parent"
           @click="() => $parent.$emit('more', props.row.parent)" />
    <template v-else>
      <q-btn v-if="props.row.gateway" flat dense round size="sm"
             :icon="props.row.open ? 'expand_more' : 'chevron_right'"
             :data-testid="'tree-toggle-' + props.row.id"
             @click="() => $parent.$emit('toggle', props.row.id)" />
      <span v-else style="display: inline-block; width: 28px"></span>
      <a :href="'{MOUNT}/products/' + encodeURIComponent(props.row.product_id) + '/devices/'
                + encodeURIComponent(props.row.name)"
         class="text-primary font-medium no-underline">{{{{ props.row.name }}}}</a>
      <q-badge v-if="props.row.gateway" outline color="blue-grey-7" label="gateway"
               class="q-ml-sm" />
    </template>
  </div>
</q-td>"""

STATUS_SLOT: Final = """<q-td :props="props">
  <q-badge v-if="!props.row.more" :color="props.value === 'online' ? 'positive' : 'grey-6'"
           :label="props.value" class="q-px-sm q-py-xs" />
</q-td>"""

ACTIVITY_SLOT: Final = """<q-td :props="props"><template v-if="!props.row.more">{{ props.value }}
  <q-tooltip>{{ props.row.activity_at }}</q-tooltip></template></q-td>"""


class SubDevicesPanel:
    def __init__(self, ctx: ConsoleContext, pid: str, name: str) -> None:
        self.ctx = ctx
        #: Children of products the key does not see are left out (access.py).
        self.who = current(ctx)
        self.tree = SubTree((pid, name))
        with card("Sub-devices", "account_tree") as self.box:
            self.box.props(tid("sub-devices-card"))
            ui.label(
                "Devices reached through this one, level by level (at most 5), "
                "with their address here and their presence."
            ).classes("text-sm text-slate-500 -mt-1")
            self.table = table(COLUMNS, "id", "sub-devices")
            self.table.add_slot("body-cell-name", NAME_SLOT)
            self.table.add_slot("body-cell-status", STATUS_SLOT)
            self.table.add_slot("body-cell-activity", ACTIVITY_SLOT)
            self.table.on("toggle", self._toggle)
            self.table.on("more", self._more)
        self.box.set_visibility(False)

    # ------------------------------------------------------------ loading

    async def load(self) -> None:
        await self._load(self.tree.root)
        while opening := self.tree.to_open(OPEN_BUDGET):  # a level at a time
            for key in opening:
                self.tree.opened(key)
                await self._load(key)
        self._show()

    async def _load(self, parent: Key, *, more: bool = False, at_least: int = 0) -> None:
        """The first page(s) of `parent`'s children (as many as `at_least` needs), or
        with `more` the next page."""
        node = self.tree.nodes.get(parent)
        if node is None:  # folded or gone meanwhile
            return
        cursor = node.next if more else None
        children: list[Child] = []
        while True:
            page = await self.ctx.api.topology.sub_devices(*parent, PAGE_SIZE, cursor)
            children += await self._children([d for d in page.items if self.who.sees(d.product_id)])
            cursor = page.next
            if more or cursor is None or len(children) >= at_least:
                break
        self.tree.fill(parent, children, cursor, more=more)

    async def _children(self, devices: list[Device]) -> list[Child]:
        """The children of a page with their presence, and whether each is a gateway."""
        states = await self.ctx.api.presence.get_many([(d.product_id, d.name) for d in devices])
        children = []
        for device in devices:
            key = (device.product_id, device.name)
            state = states[key]
            below = await self.ctx.api.topology.sub_devices(*key, 1)
            children.append(
                Child(key, device.sub_address, state.online, state.last_activity, bool(below.items))
            )
        return children

    async def _toggle(self, e: events.GenericEventArguments) -> None:
        key = key_of(e.args)
        node = self.tree.nodes.get(key)
        if node is None:
            return
        if node.open:
            self.tree.close(key)
        else:
            try:
                self.tree.opened(key)
                await self._load(key)
            except ThingsHubError as exc:
                self.tree.close(key)
                ui.notify(fmt.error(exc), type="warning")
        self._show()

    async def _more(self, e: events.GenericEventArguments) -> None:
        try:
            await self._load(key_of(e.args), more=True)
        except ThingsHubError as exc:
            ui.notify(fmt.error(exc), type="warning")
        self._show()

    # ------------------------------------------------------------ live

    def wants(self, event: Event) -> bool:
        return self.tree.wants(event)

    async def apply(self, batch: list[Event]) -> None:
        changed, reload = self.tree.apply(batch)
        for parent in reload:
            try:
                await self._load(parent, at_least=self.tree.loaded(parent))
            except NotFound:  # deleted meanwhile: its own deletion event says so
                continue
        if changed or reload:
            self._show()

    async def tick(self) -> None:
        keys = self.tree.keys()
        if not keys:
            return
        states = await self.ctx.api.presence.get_many(keys)
        for key, state in states.items():
            self.tree.set_presence(key, state.online, state.last_activity)
        self._show()

    def _show(self) -> None:
        self.table.rows = self.tree.rows(fmt.now_ms())
        self.table.update()
        self.box.set_visibility(bool(self.tree.keys()))
