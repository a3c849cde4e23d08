package main

// Custom attributes: the simulator stores a new field's managed object type as its value
// type, which clients reject ("type" is required, and is "string" on vCenter).

import (
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func (l *Lab) registerCustomFieldOverrides(s *soapLayer) {
	s.handle("CustomFieldsManager", "AddCustomFieldDef", l.opAddCustomFieldDef)
}

func (l *Lab) opAddCustomFieldDef(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.AddCustomFieldDef)
	cfm := simulator.Map.Get(c.method.This).(*simulator.CustomFieldsManager)
	var res soap.HasFault
	if f := l.invoke(cfm, func(ctx *simulator.Context) { res = cfm.AddCustomFieldDef(req) }); f != nil {
		return nil, f
	}
	if f := res.Fault(); f != nil {
		return nil, f
	}
	def := res.(*methods.AddCustomFieldDefBody).Res.Returnval
	def.Type = "string"
	simulator.Map.WithLock(cfm, func() {
		for i := range cfm.Field {
			if cfm.Field[i].Key == def.Key {
				cfm.Field[i].Type = "string"
			}
		}
	})
	for _, e := range simulator.Map.All(req.MoType) {
		entity := e.Entity()
		simulator.Map.WithLock(entity, func() {
			for i := range entity.AvailableField {
				if entity.AvailableField[i].Key == def.Key {
					entity.AvailableField[i].Type = "string"
				}
			}
		})
	}
	return def, nil
}
